"""The detector's report: ``detection.csv`` and ``detection.md``."""

import csv
import os

REPORT_CSV, REPORT_MD = "detection.csv", "detection.md"
CSV_FIELDS = ["attack", "budget", "seen_in_training", "AUC", "TPR_at_FPR", "false_positive_rate", "UAR_under_attack",
              "UAR_flagged_counted_correct", "n"]  # fmt: skip


def detection_markdown(rows, title, real_uar):
    """The detection table, with what each column means."""
    rate = rows[0]["false_positive_rate"]
    lines = [
        f"### {title}",
        "",
        f"Test split, {rows[0]['n']} utterances, every attack on every utterance. AUC: real utterances "
        f"against their fakes. TPR: fakes flagged at the threshold that flags {rate:.0%} of real utterances. "
        f"UAR under attack: the classifier alone (real data: {real_uar:.3f}). Flagged counted correct: a fake "
        "the detector flags counts as handled.",
        "",
        f"| attack | budget | seen in training | AUC | TPR at {rate:.0%} FPR | UAR under attack | UAR, flagged counted correct |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['attack']} | {r['budget']} | {'yes' if r['seen_in_training'] else 'no'} | {r['AUC']:.3f} | {r['TPR_at_FPR']:.3f} | "
        f"{r['UAR_under_attack']:.3f} | {r['UAR_flagged_counted_correct']:.3f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def write_detection_report(rows, markdown, folder):
    with open(os.path.join(folder, REPORT_CSV), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(folder, REPORT_MD), "w", encoding="utf-8") as f:
        f.write(markdown)
