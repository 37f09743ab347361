"""The attack suite's report: UAR per attack and budget, robust UAR, the masking checks, as CSV and markdown."""

import csv
import os

from speechbrain.utils.distributed import if_main_process

from ser_adv_brain.attack_suite import BUDGET_TITLES
from ser_adv_brain.masking_checks import masking_report

CSV_FIELDS = ["split", "threat_model", "budget", "attack", "UAR_alone", "UAR_worst_so_far", "attacked", "fooled"]


def suite_rows(outcomes_by_split, plan):
    """CSV rows: per split, threat model, budget and attack, the UAR alone (if measured) and the worst case so far."""
    rows = []
    for split, outcomes in outcomes_by_split.items():
        for group, budget, entries in plan:
            for entry in entries:
                key = (group, budget, entry.name)
                alone = outcomes.clean_correct & ~outcomes.fooled(key)
                rows.append({
                    "split": split, "threat_model": group, "budget": budget, "attack": entry.name,
                    "UAR_alone": outcomes.uar(alone) if outcomes.measured_alone(key) else "",
                    "UAR_worst_so_far": outcomes.uar(outcomes.robust_after(group, budget, entry.name)),
                    "attacked": int((outcomes.predictions[key] >= 0).sum()),
                    "fooled": int(outcomes.fooled(key).sum()),
                })  # fmt: skip
            rows.append({
                "split": split, "threat_model": group, "budget": budget, "attack": "robust",
                "UAR_alone": "", "UAR_worst_so_far": outcomes.uar(outcomes.robust_after(group, budget)),
                "attacked": "", "fooled": int((outcomes.clean_correct & ~outcomes.robust_after(group, budget)).sum()),
            })  # fmt: skip
    return rows


def suite_markdown(outcomes_by_split, plan, title, early_exit):
    """One table per split and threat model: attacks by budget, then robust UAR."""
    cell = "UAR_worst_so_far" if early_exit else "UAR_alone"
    rows = {(r["split"], r["threat_model"], r["budget"], r["attack"]): r for r in suite_rows(outcomes_by_split, plan)}
    lines = [f"### {title}", ""]
    if early_exit:
        lines += [
            "Early exit: each attack ran only on the utterances still correct, so a row gives the UAR under the "
            "worst case of that attack and the rows above it (the first row is the attack alone). Robust UAR: "
            "per utterance, the worst case over every attack of the threat model at that budget.",
            "",
        ]
    else:
        lines += ["UAR under each attack alone; robust UAR: per utterance, the worst case over every attack of "
                  "the threat model at that budget.", ""]  # fmt: skip
    for split, outcomes in outcomes_by_split.items():
        real = outcomes.uar(outcomes.clean_correct)
        groups = list(dict.fromkeys(group for group, _, _ in plan if group in BUDGET_TITLES))
        for group in groups:
            unit, what = BUDGET_TITLES[group]
            budgets = [b for g, b, _ in plan if g == group]
            names = next(entries for g, _, entries in plan if g == group)
            lines += [
                f"{split}, {what} (real data {real:.3f}, chance {1 / outcomes.n_classes:.3f}):",
                "",
                "| attack | " + " | ".join(f"{unit} {b:g}" for b in budgets) + " |",
                "|---|" + "---|" * len(budgets),
            ]
            for name in [e.name for e in names] + ["robust"]:
                values = [rows[(split, group, b, name)][cell if name != "robust" else "UAR_worst_so_far"] for b in budgets]
                label = "**robust UAR**" if name == "robust" else name
                lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" if v != "" else "" for v in values) + " |")
            lines.append("")
    return "\n".join(lines)


def fgsm_beside_robust(fgsm, suite, plan):
    """The paper's FGSM UAR beside robust UAR (Linf on the features) at every budget of either, dev / test."""
    splits = list(suite)
    budgets = sorted({float(e) for s in splits for e in fgsm[s]} | {b for g, b, _ in plan if g == "features_linf"})

    def paper(eps):
        cells = [next((f"{cm.uar():.3f}" for e, cm in fgsm[s].items() if abs(e - eps) < 1e-9), "-") for s in splits]
        return " / ".join(cells)

    def robust(eps):
        if eps == 0:
            return " / ".join(f"{suite[s].uar(suite[s].clean_correct):.3f}" for s in splits)
        if not any(g == "features_linf" and abs(b - eps) < 1e-9 for g, b, _ in plan):
            return "-"
        return " / ".join(f"{suite[s].uar(suite[s].robust_after('features_linf', eps)):.3f}" for s in splits)

    names = " / ".join(splits)
    lines = [f"| eps | FGSM, the paper's report ({names}) | robust UAR ({names}) |", "|---|---|---|"]
    lines += [f"| {eps:g}{' (real)' if eps == 0 else ''} | {paper(eps)} | {robust(eps)} |" for eps in budgets]
    return "\n".join(lines) + "\n"


def write_suite_report(suite, plan, checks, output_folder, title, early_exit):
    """Writes ``attack_suite.csv`` and appends the suite's tables and masking checks to ``robustness.md``.

    Arguments
    ---------
    suite : dict
        split -> gathered ``SplitOutcomes``.
    plan, checks : list
        The suite's plan and the masking checks' extra groups (see ``masking_checks.destroy_plan``).
    output_folder, title : str
    early_exit : bool

    Returns
    -------
    str
        The markdown appended.
    """
    markdown = suite_markdown(suite, plan, title, early_exit) + "\n" + masking_report(suite, plan + checks)
    if not if_main_process():
        return markdown
    with open(os.path.join(output_folder, "attack_suite.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(suite_rows(suite, plan))
    with open(os.path.join(output_folder, "robustness.md"), "a", encoding="utf-8") as f:
        f.write("\n" + markdown)
    return markdown
