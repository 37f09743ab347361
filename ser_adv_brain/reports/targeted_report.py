"""The targeted success matrix's report: ``success_matrix.csv`` and ``success_matrix.md``."""

import csv
import os


def write_success_matrix(rates, labels, folder, title):
    """``success_matrix.csv`` and ``success_matrix.md``: rows true emotion, columns target; returns the markdown."""
    with open(os.path.join(folder, "success_matrix.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ target", *labels])
        writer.writerows([label, *(f"{float(v):.4f}" for v in row)] for label, row in zip(labels, rates))
    lines = [f"### {title}", "", "| true \\ target | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += [f"| {label} | " + " | ".join(f"{float(v):.2f}" for v in row) + " |" for label, row in zip(labels, rates)]
    table = "\n".join(lines) + "\n"
    with open(os.path.join(folder, "success_matrix.md"), "w", encoding="utf-8") as f:
        f.write(table)
    return table
