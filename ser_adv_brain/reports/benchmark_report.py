"""The benchmark's report: the table with intervals, the per-fold CSV, the paired comparisons and the paper's findings.

Every figure comes from the benchmark entries (``ser_adv_brain.reports.entry``) of the trainings, on the
same folds and seeds (``leaderboard.check_comparable``); intervals and paired comparisons are those of
``ser_adv_brain.evaluation.intervals``. A finding is *held* where the paired interval lies wholly on its
side of zero, *not held* where it lies wholly on the other, and *not decidable at this size* otherwise.
"""

import os

from ser_adv_brain.evaluation.intervals import paired_comparison, uar_interval
from ser_adv_brain.evaluation.suite import in_decibels
from ser_adv_brain.reports.entry import (
    CERTIFIED_TIER,
    figure_keys,
    heard_directly_key,
    in_rooms_key,
    result_key,
    robust_kind,
    under_attack_key,
)
from ser_adv_brain.reports.leaderboard import by_model, check_comparable, emotions_of, fold_outcomes, interval_text
from ser_adv_brain.tables import markdown_table, write_csv

REAL = "real"  # the figure of real data, beside the entries' ``figure_keys``


def budget_title(result):
    """``eps .02`` for a feature budget, ``40 dB`` for an SNR."""
    if in_decibels(result["threat_model"]):
        return f"{result['budget']:g} dB ({result['threat_model']})"
    return f"{result['threat_model']} {result['budget']:g}"


def figure_columns(entry):
    """``{figure key: (kind, column title)}`` for each of ``figure_keys(entry)``, in their order; the kind is
    ``robust`` (``certified`` in the certified tier), ``heard directly`` or ``real data in the rooms`` (an
    over-the-air threat model's other two), or ``under attack`` (a smoothed classifier's adaptive attack)."""
    robust = robust_kind(entry)
    columns = {}
    for r in entry["results"]:
        key = result_key(r["threat_model"], r["budget"])
        columns[key] = (robust, f"{robust}, {budget_title(r)}")
        columns[heard_directly_key(key)] = ("heard directly", f"heard directly, {budget_title(r)}")
        columns[in_rooms_key(r["threat_model"])] = ("real data in the rooms", "real data in the held-out rooms")
        columns[under_attack_key(key)] = ("under attack", f"under adaptive attack, {budget_title(r)}")
    return {key: columns[key] for key in figure_keys(entry)}


def figures(entries):
    """``{training: {figure key: Interval}}``, ``REAL`` and every one of the entries' ``figure_keys``."""
    check_comparable(entries)
    emotions = emotions_of(entries)
    keys = [REAL] + figure_keys(entries[0])
    return {
        name: {
            key: uar_interval(fold_outcomes(mine, emotions, None if key == REAL else key), len(emotions))
            for key in keys
        }
        for name, mine in by_model(entries).items()
    }


def fold_rows(entries):
    """Per-fold CSV rows: training, fold, seed, real UAR, robust (or certified) UAR at every budget, an over-the-air
    threat model's two more figures and a smoothed classifier's under attack (``entry.figure_keys``)."""
    rows = []
    for name, mine in by_model(entries).items():
        for entry in mine:
            row = {
                "training": name,
                "fold": entry["fold"],
                "seed": entry["seed"],
                "utterances": entry["utterances"],
                "real_UAR": entry["clean_UAR"],
            }
            robust = robust_kind(entry)
            for r in entry["results"]:
                key = result_key(r["threat_model"], r["budget"])
                row[f"{robust}_UAR@{key}"] = r["robust_UAR"]
                if "robust_UAR_heard_directly" in r:
                    row[f"UAR@{heard_directly_key(key)}"] = r["robust_UAR_heard_directly"]
                    row[f"UAR@{in_rooms_key(r['threat_model'])}"] = r["real_UAR_in_rooms"]
                if "robust_UAR_under_attack" in r:
                    row[f"UAR@{under_attack_key(key)}"] = r["robust_UAR_under_attack"]
            rows.append(row)
    return rows


def comparison(entries, first, second, key_first, key_second=None):
    """Training ``first`` at ``key_first`` minus ``second`` at ``key_second`` (the same key if None), paired."""
    models, emotions = by_model(entries), emotions_of(entries)
    a = fold_outcomes(models[first], emotions, None if key_first == REAL else key_first)
    b = fold_outcomes(
        models[second], emotions, None if (key_second or key_first) == REAL else (key_second or key_first)
    )
    return paired_comparison(a, b, len(emotions))


def verdict(result, sign=1):
    """``held`` / ``not held`` / ``not decidable at this size`` for the claim that ``sign * effect > 0``."""
    low, high = sorted((sign * result.low, sign * result.high))
    if low > 0:
        return "held"
    if high < 0:
        return "not held"
    return "not decidable at this size"


def paired_rows(entries, baseline, pairs):
    """Every training against ``baseline`` at every figure, then the extra ``pairs`` ``(a, b, key)``."""
    keys = [REAL] + figure_keys(entries[0])
    rows = []
    for name in by_model(entries):
        if name != baseline:
            rows += [(name, baseline, key, comparison(entries, name, baseline, key)) for key in keys]
    rows += [(a, b, key, comparison(entries, a, b, key)) for a, b, key in pairs]
    return rows


def comparison_text(result):
    return f"{result.effect:+.3f} [{result.low:+.3f}, {result.high:+.3f}], p = {result.p_value:.3f}"


def evaluation_text(entry):
    """How an entry was evaluated: its tier's attacks, or a certificate's votes and the adaptive attack's."""
    if entry["tier"] != CERTIFIED_TIER:
        return f"{entry['tier']} tier ({', '.join(entry['attacks'])})"
    votes = "certified tier (CERTIFY, n0 = {n0}, n = {n}, alpha = {alpha:g}".format(**entry["certificate"])
    return votes + (f"; adaptive attack: {', '.join(entry['attacks'])})" if entry["attacks"] else ")")


def benchmark_markdown(entries, table, title, baseline, pairs, findings):
    """The report: the ``table`` (``figures(entries)``), the paired comparisons against ``baseline`` and ``pairs``,
    the ``findings``.

    ``findings``: ``(statement, a, b, key_a, key_b, sign)``: the claim that ``sign * (a at key_a - b at key_b) > 0``.
    """
    first = entries[0]
    folds = sorted({(e["fold"], e["seed"]) for e in entries})
    lines = [
        f"### {title}",
        "",
        f"{first['corpus']}, {first['protocol']['kind']}"
        + (f" ({first['protocol']['n_folds']} folds)" if "n_folds" in first["protocol"] else "")
        + f", {len(folds)} fold-and-seed runs per training, test split ({first['split']}), {evaluation_text(first)}. "
        "Each cell: the mean UAR over the runs and its 95% interval "
        "(two-level bootstrap over folds and utterances).",
        "",
        markdown_table(
            [[name, *(interval_text(*row[key]) for key in row)] for name, row in table.items()],
            ["training", "real data", *(title for _, title in figure_columns(first).values())],
        ),
        "",
        "#### Paired comparisons (A minus B on the same folds, seeds and utterances)",
        "",
        markdown_table(
            [[a, b, key, comparison_text(result)] for a, b, key, result in paired_rows(entries, baseline, pairs)],
            ["A", "B", "figure", "difference [95% interval], p"],
        ),
        "",
    ]
    if findings:
        lines += ["#### The paper's findings at this size", ""]
    for statement, a, b, key_a, key_b, sign in findings:
        result = comparison(entries, a, b, key_a, key_b)
        lines.append(
            f"- {statement}: **{verdict(result, sign)}** "
            f"({a} at {key_a} minus {b} at {key_b}: {comparison_text(result)})."
        )
    return "\n".join(lines) + "\n"


def write_benchmark_report(entries, folder, title, baseline, pairs, findings):
    """Writes ``benchmark.md``, ``benchmark_folds.csv`` and ``benchmark.csv`` (the table's figures); returns the
    markdown."""
    table = figures(entries)  # bootstrapped once, for the markdown and the CSV
    markdown = benchmark_markdown(entries, table, title, baseline, pairs, findings)
    with open(os.path.join(folder, "benchmark.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    write_csv(os.path.join(folder, "benchmark_folds.csv"), fold_rows(entries))
    kinds = {REAL: "real", **{key: kind for key, (kind, _) in figure_columns(entries[0]).items()}}
    rows = [
        {"training": name, "figure": key, "kind": kinds[key], "UAR": value.mean, "low": value.low, "high": value.high}
        for name, row in table.items()
        for key, value in row.items()
    ]
    write_csv(os.path.join(folder, "benchmark.csv"), rows)
    return markdown
