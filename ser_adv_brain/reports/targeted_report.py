"""The targeted success matrix's report: ``success_matrix.csv`` and ``success_matrix.md``."""

import os

from ser_adv_brain.tables import markdown_table, write_csv


def write_success_matrix(rates, labels, folder, title):
    """``success_matrix.csv`` and ``success_matrix.md``: rows true emotion, columns target; returns the markdown."""
    header = ["true \\ target", *labels]
    rows = [dict(zip(header, [label, *(f"{float(v):.4f}" for v in row)])) for label, row in zip(labels, rates)]
    write_csv(os.path.join(folder, "success_matrix.csv"), rows, header)
    table = markdown_table([[label, *(f"{float(v):.2f}" for v in row)] for label, row in zip(labels, rates)], header)
    markdown = f"### {title}\n\n{table}\n"
    with open(os.path.join(folder, "success_matrix.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    return markdown
