"""The detector's report: ``detection.csv`` and ``detection.md``."""

import os

from ser_adv_brain.tables import markdown_table, write_csv

REPORT_CSV, REPORT_MD = "detection.csv", "detection.md"
CSV_FIELDS = [
    "attack",
    "budget",
    "seen_in_training",
    "AUC",
    "TPR_at_FPR",
    "false_positive_rate",
    "UAR_under_attack",
    "UAR_flagged_counted_correct",
    "n",
]


def detection_markdown(rows, title, real_uar):
    """The detection table, with what each column means."""
    rate = rows[0]["false_positive_rate"]
    table = [
        [
            r["attack"],
            r["budget"],
            "yes" if r["seen_in_training"] else "no",
            f"{r['AUC']:.3f}",
            f"{r['TPR_at_FPR']:.3f}",
            f"{r['UAR_under_attack']:.3f}",
            f"{r['UAR_flagged_counted_correct']:.3f}",
        ]
        for r in rows
    ]
    headers = [
        "attack",
        "budget",
        "seen in training",
        "AUC",
        f"TPR at {rate:.0%} FPR",
        "UAR under attack",
        "UAR, flagged counted correct",
    ]
    lines = [
        f"### {title}",
        "",
        f"Test split, {rows[0]['n']} utterances, every attack on every utterance. AUC: real utterances "
        f"against their fakes. TPR: fakes flagged at the threshold that flags {rate:.0%} of real utterances. "
        f"UAR under attack: the classifier alone (real data: {real_uar:.3f}). Flagged counted correct: a fake "
        "the detector flags counts as handled.",
        "",
        markdown_table(table, headers),
    ]
    return "\n".join(lines) + "\n"


def write_detection_report(rows, markdown, folder):
    write_csv(os.path.join(folder, REPORT_CSV), rows, CSV_FIELDS)
    with open(os.path.join(folder, REPORT_MD), "w", encoding="utf-8") as f:
        f.write(markdown)
