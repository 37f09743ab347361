"""The leaderboard of benchmark entries: per threat model and budget, the models ranked by robust UAR (certified
UAR in the certified tier, ``entry.make_certified_entry``); models with the same one share a rank and are listed
by clean UAR.

A table holds only entries evaluated alike: the same corpus, speaker-fold protocol, test split, tier
and early exit (``entry.PROTOCOL_FIELDS``), the same budgets, and every model on the same folds and
seeds. An entry that differs is refused, naming its file and what differs, rather than ranked against
figures it cannot be compared with. A model evaluated on fewer of the folder's folds and seeds than the
others (a training still running, a partial entry) is not ranked but named (``ranked_entries``), so that
it holds back no one else's ranking. One kind of model lacks whole threat models: a model that takes the
waveform (a self-supervised encoder's) has no features to attack. The leaderboard ranks it in the tables
of the threat models it has, if it was evaluated there at the same budgets as the others
(``check_rankable``), and names it under the tables it is not in; the benchmark's report, whose table has
a column per budget, needs every entry at every budget (``check_comparable``). A model's figure is the mean
over its entries (folds and seeds) with the two-level bootstrap interval of
``ser_adv_brain.evaluation.intervals``.
"""

import os

import torch

from ser_adv_brain.evaluation.intervals import FoldOutcomes, uar_interval
from ser_adv_brain.reports.entry import PROTOCOL_FIELDS, figure_keys, result_key, robust_kind, utterance_outcome
from ser_adv_brain.tables import markdown_table, uar_text, write_csv

LEADERBOARD_FIELDS = [
    "threat_model",
    "budget",
    "unit",
    "rank",
    "name",
    "architecture",
    "training",
    "folds",
    "seeds",
    "clean_UAR",
    "clean_low",
    "clean_high",
    "robust_UAR",
    "robust_low",
    "robust_high",
    "forward_passes_per_utterance",
    "corpus",
    "tier",
]


def budgets_of(entry):
    return [(r["threat_model"], r["budget"]) for r in entry["results"]]


def of_threat_model(entry, threat_model):
    """The entry with the results of ``threat_model`` only (None: all of them)."""
    return {**entry, "results": [r for r in entry["results"] if threat_model in (None, r["threat_model"])]}


def check_evaluated_alike(entries, per_threat_model=False):
    """Raises a ``ValueError`` naming the first entry whose protocol, budgets or figures differ from the first one's;
    ``per_threat_model``: budgets and figures compared in each threat model the two entries share, so that an entry
    may lack whole threat models (a model that takes the waveform)."""
    first = entries[0]
    for entry in entries[1:]:
        for field in PROTOCOL_FIELDS:
            if entry.get(field) != first.get(field):
                raise ValueError(
                    f"{entry['path']}: its {field} is {entry.get(field)!r}, {first['path']} has {first.get(field)!r}; "
                    "a leaderboard ranks entries evaluated alike only."
                )
    reference = {}  # threat model (None: all of them) -> the first entry that has it
    for entry in entries:
        threats = {r["threat_model"] for r in entry["results"]} if per_threat_model else {None}
        for threat in sorted(threats, key=str):
            other = reference.setdefault(threat, entry)
            mine, theirs = of_threat_model(entry, threat), of_threat_model(other, threat)
            if budgets_of(mine) != budgets_of(theirs):
                raise ValueError(
                    f"{entry['path']}: its budgets {budgets_of(mine)} differ from {other['path']}'s "
                    f"{budgets_of(theirs)}."
                )
            if figure_keys(mine) != figure_keys(theirs):
                raise ValueError(
                    f"{entry['path']}: its figures {figure_keys(mine)} differ from {other['path']}'s "
                    f"{figure_keys(theirs)} (an over-the-air entry made before entries kept its audio heard directly "
                    "and real data in the rooms: evaluate it again; a smoothed classifier attacked at other budgets: "
                    "attack it at the same)."
                )


def check_same_replicates(entries):
    """Raises a ``ValueError`` naming the first model evaluated on other folds and seeds than the first model."""
    replicates = {}
    for entry in entries:
        replicates.setdefault(entry["name"], []).append((entry["fold"], entry["seed"]))
    reference_name, reference = next(iter(replicates.items()))
    for name, folds in replicates.items():
        if sorted(folds) != sorted(reference):
            raise ValueError(
                f"{name} was evaluated on (fold, seed) {sorted(folds)}, {reference_name} on {sorted(reference)}: "
                "models are compared on the same folds and seeds only."
            )


def run_order(fold, seed):
    """The sort key of a (fold, seed) run: by fold, then seed (a fold of None, one split, first)."""
    return -1 if fold is None else fold, seed


def replicates_of(entries):
    """``{name: the set of its (fold, seed) runs}``, in the order the names first appear."""
    replicates = {}
    for entry in entries:
        replicates.setdefault(entry["name"], set()).add((entry["fold"], entry["seed"]))
    return replicates


def ranked_entries(entries):
    """The entries of the models evaluated on every (fold, seed) any model has, and ``{name: its (fold, seed)
    runs}`` of the others; where no model has them all, every entry (``check_same_replicates`` names the
    difference)."""
    replicates = replicates_of(entries)
    everyone = set().union(*replicates.values())
    behind = {
        name: sorted(runs, key=lambda run: run_order(*run)) for name, runs in replicates.items() if runs != everyone
    }
    if len(behind) == len(replicates):
        return entries, {}
    return [entry for entry in entries if entry["name"] not in behind], behind


def no_entries():
    return ValueError(
        "No entry.json found: evaluate the models first (ser-adv evaluate --tier ..., or ser-adv benchmark)."
    )


def check_comparable(entries):
    """The benchmark report's rule: every entry evaluated alike at every budget, on the same folds and seeds."""
    if not entries:
        raise no_entries()
    check_evaluated_alike(entries)
    check_same_replicates(entries)


def check_rankable(entries):
    """The leaderboard's rule: ``check_comparable``'s, but in each threat model an entry has (see the module
    docstring)."""
    if not entries:
        raise no_entries()
    check_evaluated_alike(entries, per_threat_model=True)
    for mine in by_model(entries).values():
        threats = [sorted({r["threat_model"] for r in entry["results"]}) for entry in mine]
        for entry, theirs in zip(mine, threats):
            if theirs != threats[0]:
                raise ValueError(
                    f"{entry['path']}: evaluated in {theirs}, {mine[0]['path']} of the same model in {threats[0]}; "
                    "a model's figure is the mean over entries of the same threat models."
                )
    check_same_replicates(entries)


def by_model(entries):
    """``{name: [entries in (fold, seed) order]}``, in the order the names first appear."""
    models = {}
    for entry in entries:
        models.setdefault(entry["name"], []).append(entry)
    return {name: sorted(group, key=lambda e: run_order(e["fold"], e["seed"])) for name, group in models.items()}


def emotions_of(entries):
    """Every emotion of the entries' test utterances, sorted: the class indices of ``fold_outcomes``."""
    return sorted({r["emotion"] for e in entries for r in e["per_utterance"]})


def fold_outcomes(entries, emotions, key=None):
    """The ``FoldOutcomes`` of a model's entries: real data (``key`` None) or one of ``entry.figure_keys``."""
    outcomes = []
    for entry in entries:
        rows = entry["per_utterance"]
        targets = torch.tensor([emotions.index(r["emotion"]) for r in rows])
        correct = torch.tensor([utterance_outcome(r, key) for r in rows])
        outcomes.append(FoldOutcomes(targets, correct))
    return outcomes


def leaderboard_rows(entries):
    """One row per model, threat model and budget, ranked by robust UAR within each (see the module docstring)."""
    check_rankable(entries)
    models, emotions = by_model(entries), emotions_of(entries)
    # A model's real-data figure is the same in every table: bootstrapped once.
    cleans = {name: uar_interval(fold_outcomes(mine, emotions), len(emotions)) for name, mine in models.items()}
    rows = []
    results = {(r["threat_model"], r["budget"]): r for e in entries for r in e["results"]}  # first met first
    for (group, budget), result in results.items():
        key = result_key(group, budget)
        table = []
        for name, mine in models.items():
            if (group, budget) not in budgets_of(mine[0]):
                continue
            clean = cleans[name]
            robust = uar_interval(fold_outcomes(mine, emotions, key), len(emotions))
            passes = [
                r["forward_passes_per_utterance"]
                for e in mine
                for r in e["results"]
                if (r["threat_model"], r["budget"]) == (group, budget)
            ]
            table.append(
                {
                    "threat_model": group,
                    "budget": budget,
                    "unit": result["unit"],
                    "name": name,
                    "architecture": "{model} (width {base_channels})".format(**mine[0]["architecture"]),
                    "training": mine[0]["training"]["step"].split("(")[0],
                    "folds": len({e["fold"] for e in mine}),
                    "seeds": len({e["seed"] for e in mine}),
                    "clean_UAR": clean.mean,
                    "clean_low": clean.low,
                    "clean_high": clean.high,
                    "robust_UAR": robust.mean,
                    "robust_low": robust.low,
                    "robust_high": robust.high,
                    "forward_passes_per_utterance": sum(passes) / len(passes),
                    "corpus": mine[0]["corpus"],
                    "tier": mine[0]["tier"],
                }
            )
        # Models with the same robust UAR share a rank (at a budget that fools every model, all are first), and
        # are listed by clean UAR: one order whichever order the entries were read in.
        table.sort(key=lambda row: (-row["robust_UAR"], -row["clean_UAR"], row["name"]))
        rows += [{**row, "rank": 1 + sum(o["robust_UAR"] > row["robust_UAR"] for o in table)} for row in table]
    return rows


def interval_text(mean, low, high):
    return f"{uar_text(mean)} [{uar_text(low)}, {uar_text(high)}]"


def leaderboard_markdown(rows, behind=None):
    """One table per threat model and budget; ``behind``: the models not ranked for want of folds and seeds
    (``ranked_entries``), named above the tables."""
    first = rows[0]
    robust = f"{robust_kind(first)} UAR"
    lines = [
        f"### Leaderboard: {first['corpus']}, {first['tier']} tier",
        "",
        "Mean over each model's folds and seeds, with its 95% interval (two-level bootstrap over folds and "
        f"utterances, `ser_adv_brain.evaluation.intervals`); ranked by {robust}.",
        "",
    ]
    if behind:
        runs = ", ".join(
            f"{name} ({'; '.join(f'fold {fold}, seed {seed}' for fold, seed in mine)})" for name, mine in behind.items()
        )
        lines += [f"Not ranked, evaluated on fewer folds and seeds than the models ranked: {runs}.", ""]
    models = list(dict.fromkeys(r["name"] for r in rows))
    for group, budget in dict.fromkeys((r["threat_model"], r["budget"]) for r in rows):
        mine = [r for r in rows if (r["threat_model"], r["budget"]) == (group, budget)]
        lines += [f"#### {group} at {budget:g} ({mine[0]['unit']})", ""]
        absent = [name for name in models if name not in {r["name"] for r in mine}]
        if absent:
            lines += [
                f"Not ranked here, evaluated without this threat model: {', '.join(absent)}.",
                "",
            ]
        lines.append(
            markdown_table(
                [
                    [
                        r["rank"],
                        r["name"],
                        r["architecture"],
                        r["training"],
                        f"{r['folds']} x {r['seeds']}",
                        interval_text(r["clean_UAR"], r["clean_low"], r["clean_high"]),
                        interval_text(r["robust_UAR"], r["robust_low"], r["robust_high"]),
                        f"{r['forward_passes_per_utterance']:.0f}",
                    ]
                    for r in mine
                ],
                [
                    "rank",
                    "model",
                    "architecture",
                    "training step",
                    "folds x seeds",
                    "clean UAR",
                    robust,
                    "forward passes / utterance",
                ],
            )
        )
        lines.append("")
    return "\n".join(lines)


def write_leaderboard(entries, folder):
    """Writes ``leaderboard.md`` and ``leaderboard.csv`` into ``folder``; returns the markdown."""
    ranked, behind = ranked_entries(entries)
    rows = leaderboard_rows(ranked)
    markdown = leaderboard_markdown(rows, behind)
    write_csv(os.path.join(folder, "leaderboard.csv"), rows, LEADERBOARD_FIELDS)
    with open(os.path.join(folder, "leaderboard.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    return markdown
