"""The transfer matrix's report: ``transfer.csv`` and ``transfer.md``."""

import csv
import os


def write_transfer_report(matrices, real, attack, folders, output_folder, split):
    """``transfer.csv`` (eps, source, target, UAR) and ``transfer.md`` (one N x N table per eps)."""
    os.makedirs(output_folder, exist_ok=True)
    with open(os.path.join(output_folder, "transfer.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["eps", "source", "target", "UAR"])
        for eps, matrix in matrices.items():
            writer.writerows([eps, source, target, f"{uar:.4f}"] for (source, target), uar in matrix.items())
        writer.writerows(["real", "", target, f"{uar:.4f}"] for target, uar in real.items())
    names = [os.path.normpath(folder) for folder in folders]
    lines = [f"### Transfer: {attack!r}, {split} UAR (rows: source of the fake data, columns: target)", ""]
    lines += ["Models: " + "; ".join(f"{i + 1} = `{name}`" for i, name in enumerate(names)), ""]
    header = "| source \\ target | " + " | ".join(str(i + 1) for i in range(len(folders))) + " |"
    rule = "|---|" + "---|" * len(folders)
    lines += [header, rule, "| real data | " + " | ".join(f"{real[f]:.3f}" for f in folders) + " |"]
    for eps, matrix in matrices.items():
        for i, source in enumerate(folders):
            cells = [f"{matrix[(source, target)]:.3f}" for target in folders]
            lines.append(f"| {i + 1}, eps {eps:g} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(output_folder, "transfer.md"), "w", encoding="utf-8") as f:
        f.write(table)
    return table
