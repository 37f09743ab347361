"""The transfer matrix's report: ``transfer.csv`` and ``transfer.md``."""

import os

from ser_adv_brain.tables import markdown_table, write_csv


def write_transfer_report(matrices, real, attack, folders, output_folder, split):
    """``transfer.csv`` (eps, source, target, UAR) and ``transfer.md`` (one N x N table per eps)."""
    rows = [
        {"eps": eps, "source": source, "target": target, "UAR": f"{uar:.4f}"}
        for eps, matrix in matrices.items()
        for (source, target), uar in matrix.items()
    ]
    rows += [{"eps": "real", "source": "", "target": target, "UAR": f"{uar:.4f}"} for target, uar in real.items()]
    write_csv(os.path.join(output_folder, "transfer.csv"), rows, ["eps", "source", "target", "UAR"])
    names = [os.path.normpath(folder) for folder in folders]
    table = [["real data", *(f"{real[f]:.3f}" for f in folders)]]
    table += [
        [f"{i + 1}, eps {eps:g}", *(f"{matrix[(source, target)]:.3f}" for target in folders)]
        for eps, matrix in matrices.items()
        for i, source in enumerate(folders)
    ]
    markdown = (
        "\n".join(
            [
                f"### Transfer: {attack!r}, {split} UAR (rows: source of the fake data, columns: target)",
                "",
                "Models: " + "; ".join(f"{i + 1} = `{name}`" for i, name in enumerate(names)),
                "",
                markdown_table(table, ["source \\ target", *(str(i + 1) for i in range(len(folders)))]),
            ]
        )
        + "\n"
    )
    with open(os.path.join(output_folder, "transfer.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    return markdown
