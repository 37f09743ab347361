"""The attack suite's report: UAR per attack and budget, robust UAR, the masking checks, as CSV and markdown."""

import math
import os

import torch
from speechbrain.utils.distributed import if_main_process

from ser_adv_brain.attacks.universal_perturbation import rms
from ser_adv_brain.evaluation.masking import masking_report
from ser_adv_brain.evaluation.suite import BUDGET_TITLES, budget_text
from ser_adv_brain.tables import markdown_table, write_csv

CSV_FIELDS = ["split", "threat_model", "budget", "attack", "UAR_alone", "UAR_worst_so_far", "attacked", "fooled"]
# The rows an over-the-air group adds beside robust UAR in the held-out rooms: robust UAR of the same audio heard
# directly (no room), and UAR on real data in the held-out rooms (what the rooms alone leave).
HEARD_DIRECTLY = "robust, heard directly"
REAL_IN_ROOMS = "real data, held-out rooms"
ROOM_ROWS = (HEARD_DIRECTLY, REAL_IN_ROOMS)


def suite_rows(outcomes_by_split, plan):
    """CSV rows: per split, threat model, budget and attack, the UAR alone (if measured) and the worst case so far.

    An over-the-air group (``SplitOutcomes.room_clean``) adds, at each budget, ``HEARD_DIRECTLY`` and
    ``REAL_IN_ROOMS`` (their UAR in both columns, so that the pictures draw them as lines).
    """
    rows = []
    for split, outcomes in outcomes_by_split.items():
        for group, budget, entries in plan:
            for entry in entries:
                key = (group, budget, entry.name)
                alone = outcomes.correct_unattacked(group) & ~outcomes.fooled(key)
                rows.append(
                    {
                        "split": split,
                        "threat_model": group,
                        "budget": budget,
                        "attack": entry.name,
                        "UAR_alone": outcomes.uar(alone) if outcomes.measured_alone(key) else "",
                        "UAR_worst_so_far": outcomes.uar(outcomes.robust_after(group, budget, entry.name)),
                        "attacked": int((outcomes.predictions[key] >= 0).sum()),
                        "fooled": int(outcomes.fooled(key).sum()),
                    }
                )
            rows.append(
                {
                    "split": split,
                    "threat_model": group,
                    "budget": budget,
                    "attack": "robust",
                    "UAR_alone": "",
                    "UAR_worst_so_far": outcomes.uar(outcomes.robust_after(group, budget)),
                    "attacked": "",
                    "fooled": int((outcomes.clean_correct & ~outcomes.robust_after(group, budget)).sum()),
                }
            )
            if group in outcomes.room_clean:
                correct = {
                    HEARD_DIRECTLY: outcomes.robust_after(group, budget, directly=True),
                    REAL_IN_ROOMS: outcomes.correct_unattacked(group),
                }
                rows += [
                    {
                        "split": split,
                        "threat_model": group,
                        "budget": budget,
                        "attack": name,
                        "UAR_alone": outcomes.uar(correct[name]),
                        "UAR_worst_so_far": outcomes.uar(correct[name]),
                        "attacked": "",
                        "fooled": int((outcomes.clean_correct & ~correct[name]).sum()),
                    }
                    for name in ROOM_ROWS
                ]
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
        lines += [
            "UAR under each attack alone; robust UAR: per utterance, the worst case over every attack of "
            "the threat model at that budget.",
            "",
        ]
    for split, outcomes in outcomes_by_split.items():
        real = outcomes.uar(outcomes.clean_correct)
        groups = list(dict.fromkeys(group for group, _, _ in plan if group in BUDGET_TITLES))
        for group in groups:
            unit, what = BUDGET_TITLES[group]
            budgets = [b for g, b, _ in plan if g == group]
            names = next(entries for g, _, entries in plan if g == group)
            over_the_air = group in outcomes.room_clean
            labels = {"robust": "**robust UAR**", HEARD_DIRECTLY: "robust UAR of the same audio heard directly"}
            table = []
            for name in [e.name for e in names] + ["robust", *(ROOM_ROWS if over_the_air else ())]:
                column = cell if name not in ("robust", *ROOM_ROWS) else "UAR_worst_so_far"
                values = [rows[(split, group, b, name)][column] for b in budgets]
                table.append([labels.get(name, name), *(f"{v:.3f}" if v != "" else "" for v in values)])
            rooms = (
                f", {names[0].attack.rooms.size('held_out')} held-out rooms, the worst per utterance"
                if over_the_air
                else ""
            )
            lines += [
                f"{split}, {what}{rooms} (real data {real:.3f}, chance {1 / outcomes.n_classes:.3f}):",
                "",
                markdown_table(table, ["attack", *(f"{unit} {b:g}" for b in budgets)]),
                "",
            ]
    return "\n".join(lines)


def query_grid(max_queries):
    """Query budgets of a UAR-by-queries curve: 1, 2, 5, 10, 20, 50, ... below ``max_queries``, then it.

    Example
    -------
    >>> query_grid(200)
    [1, 2, 5, 10, 20, 50, 100, 200]
    """
    grid, scale = [], 1
    while scale < max_queries:
        grid += [q * scale for q in (1, 2, 5) if q * scale < max_queries]
        scale *= 10
    return grid + [max_queries]


def query_rows(outcomes_by_split, plan, early_exit):
    """Rows ``(split, threat_model, budget, attack, queries, UAR)`` for every attack that reports its queries.

    UAR with a budget of ``queries`` scores per utterance, the clean input's
    included: an utterance counts as fooled only if the attack fooled it
    within that many. Under early exit, on top of the attacks before it (its
    last point is then its ``UAR_worst_so_far``); otherwise the attack alone.
    """
    rows = []
    for split, outcomes in outcomes_by_split.items():
        for group, budget, entries in plan:
            for entry in entries:
                key = (group, budget, entry.name)
                queries = outcomes.details["queries"][key]
                if entry.attack.max_queries is None or torch.isnan(queries).all():
                    continue
                before = outcomes.robust_before(group, budget, entry.name) if early_exit else outcomes.clean_correct
                for limit in query_grid(entry.attack.max_queries):
                    correct = before & ~(outcomes.fooled(key) & (queries <= limit))
                    rows.append(
                        {
                            "split": split,
                            "threat_model": group,
                            "budget": budget,
                            "attack": entry.name,
                            "queries": limit,
                            "UAR": outcomes.uar(correct),
                        }
                    )
    return rows


def query_markdown(rows, early_exit):
    """One table per attack: UAR by query budget (columns), one row per split and budget."""
    lines = []
    for attack in dict.fromkeys(r["attack"] for r in rows):
        mine = [r for r in rows if r["attack"] == attack]
        grid = list(dict.fromkeys(r["queries"] for r in mine))
        table = [
            [
                split,
                budget_text(group, budget),
                *(
                    f"{r['UAR']:.3f}"
                    for r in mine
                    if (r["split"], r["threat_model"], r["budget"]) == (split, group, budget)
                ),
            ]
            for split, group, budget in dict.fromkeys((r["split"], r["threat_model"], r["budget"]) for r in mine)
        ]
        lines += [
            f"#### {attack}: UAR against the number of queries",
            "",
            "Queries per utterance, the clean input's included; "
            + ("on top of the attacks before it (early exit)." if early_exit else "the attack alone."),
            "",
            markdown_table(table, ["split", "budget", *(str(q) for q in grid)]),
            "",
        ]
    return "\n".join(lines)


def snr_rows(outcomes_by_split, plan):
    """Per attacked utterance of every attack that reports it: the realised SNR in dB (inf: audio unchanged)."""
    rows = []
    for split, outcomes in outcomes_by_split.items():
        for group, budget, entries in plan:
            for entry in entries:
                key = (group, budget, entry.name)
                snr, fooled = outcomes.details["snr_db"][key], outcomes.fooled(key)
                rows += [
                    {
                        "split": split,
                        "id": outcomes.ids[i],
                        "threat_model": group,
                        "budget": budget,
                        "attack": entry.name,
                        "snr_db": float(snr[i]),
                        "fooled": bool(fooled[i]),
                    }
                    for i in (~torch.isnan(snr)).nonzero().flatten().tolist()
                ]
    return rows


def snr_markdown(rows):
    """The realised SNR of the waveform attacks: per split, attack and budget, its range and median."""
    if not rows:
        return ""
    table = []
    for split, group, budget, attack in dict.fromkeys(
        (r["split"], r["threat_model"], r["budget"], r["attack"]) for r in rows
    ):
        mine = [
            r
            for r in rows
            if (r["split"], r["threat_model"], r["budget"], r["attack"]) == (split, group, budget, attack)
        ]
        snr = torch.tensor([r["snr_db"] for r in mine])
        table.append(
            [
                split,
                attack,
                budget_text(group, budget),
                len(snr),
                f"{snr.min():.2f}",
                f"{snr.median():.2f}",
                f"{snr.max():.2f}",
            ]
        )
    headers = ["split", "attack", "budget", "utterances attacked", "min dB", "median dB", "max dB"]
    title = "#### Realised SNR of the waveform attacks (after 16-bit rounding; per utterance in `waveform_snr.csv`)"
    return f"{title}\n\n{markdown_table(table, headers)}\n"


def universal_markdown(plan):
    """The universal perturbations the suite used: per attack and budget, the reference level, ``v``'s level,
    what it was learnt on and what learning cost (its wav files are in the run's ``universal_perturbations/``)."""
    table = []
    for group, budget, entries in plan:
        for entry in entries:
            learnt = entry.attack.learnt.get(budget) if entry.attack.needs_training_data else None
            if learnt is None:
                continue
            level = 20 * math.log10(max(learnt.reference_rms, 1e-12))
            v_rms = rms(learnt.perturbation)
            table.append(
                [
                    entry.name,
                    budget_text(group, budget),
                    f"{level:.1f}",
                    f"{20 * math.log10(v_rms):.1f}" if v_rms > 0 else "-inf",
                    len(learnt.perturbation),
                    len(learnt.training_ids),
                    f"{learnt.fooled_share:.3f}",
                    learnt.passes,
                ]
            )
    if not table:
        return ""
    headers = [
        "attack",
        "budget",
        "reference dBFS",
        "v dBFS",
        "v samples",
        "training utterances",
        "fooled in last pass",
        "passes to learn",
    ]
    title = (
        "#### Universal perturbations (learnt on the training split; reference: its median utterance's RMS; "
        "wav files in the run's `universal_perturbations/`)"
    )
    return f"{title}\n\n{markdown_table(table, headers)}\n"


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
    rows = [[f"{eps:g}{' (real)' if eps == 0 else ''}", paper(eps), robust(eps)] for eps in budgets]
    return markdown_table(rows, ["eps", f"FGSM, the paper's report ({names})", f"robust UAR ({names})"]) + "\n"


def write_suite_report(suite, plan, checks, output_folder, title, early_exit):
    """Writes ``attack_suite.csv``, ``square_queries.csv`` (UAR against queries, for attacks that count them),
    ``waveform_snr.csv`` (the realised SNR of every utterance a waveform attack changed) and appends the suite's
    tables, their summaries and the masking checks to ``robustness.md``.

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
    queries, snrs = query_rows(suite, plan, early_exit), snr_rows(suite, plan)
    markdown = "\n".join(
        [
            suite_markdown(suite, plan, title, early_exit),
            query_markdown(queries, early_exit),
            snr_markdown(snrs),
            universal_markdown(plan),
            masking_report(suite, plan + checks),
        ]
    )
    if not if_main_process():
        return markdown
    write_csv(os.path.join(output_folder, "attack_suite.csv"), suite_rows(suite, plan), CSV_FIELDS)
    if queries:
        write_csv(os.path.join(output_folder, "square_queries.csv"), queries)
    if snrs:
        write_csv(os.path.join(output_folder, "waveform_snr.csv"), snrs)
    with open(os.path.join(output_folder, "robustness.md"), "a", encoding="utf-8") as f:
        f.write("\n" + markdown)
    return markdown
