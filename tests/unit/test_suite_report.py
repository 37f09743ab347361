"""The attack suite's report on hand-built per-utterance outcomes, where every figure is known in advance."""

import csv

import torch
from helpers import markdown_rows

from ser_adv_brain.attacks import SquareAttack, WaveformPGD
from ser_adv_brain.evaluation.suite import SplitOutcomes, SuiteEntry
from ser_adv_brain.reports.suite_report import query_rows, write_suite_report

SQUARE = ("features_linf", 0.1, "SquareAttack")
WAVEFORM = ("waveform_snr", 30.0, "WaveformPGD")


def outcomes():
    """Four utterances of classes 0, 0, 1, 1, all correct on real data.

    Square Attack (20 queries) fools b at its 3rd query and d at its 10th; a and c hold out. The waveform
    attack ran on a (fooled, 31.5 dB) and c (held out, 30.2 dB) only.
    """
    split = SplitOutcomes([SQUARE, WAVEFORM], n_classes=2)
    nan = float("nan")
    details = {
        "queries": {SQUARE: torch.tensor([20.0, 3.0, 20.0, 10.0]), WAVEFORM: torch.full((4,), nan)},
        "snr_db": {SQUARE: torch.full((4,), nan), WAVEFORM: torch.tensor([31.5, nan, 30.2, nan], dtype=torch.float64)},
    }
    predictions = {SQUARE: torch.tensor([0, 1, 1, 0]), WAVEFORM: torch.tensor([1, -1, 1, -1])}
    split.append(
        ["a", "b", "c", "d"],
        torch.tensor([0, 0, 1, 1]),
        torch.tensor([0, 0, 1, 1]),
        torch.ones(4, dtype=torch.bool),
        predictions,
        details,
    )
    return split.gather()


def plan():
    square = SuiteEntry(SquareAttack(eps=0.1, max_queries=20, eta=None), "SquareAttack", "features_linf")
    waveform = SuiteEntry(WaveformPGD(eps=30.0, steps=1), "WaveformPGD", "waveform_snr")
    return [("features_linf", 0.1, [square]), ("waveform_snr", 30.0, [waveform])]


def test_square_uar_by_queries_counts_only_what_was_fooled_within_each_budget():
    rows = query_rows({"test": outcomes()}, plan(), early_exit=True)
    # By 5 queries b is fooled (class 0: 1/2, class 1: 2/2), by 10 (its last query) d too.
    assert [(r["queries"], r["UAR"]) for r in rows] == [(1, 1.0), (2, 1.0), (5, 0.75), (10, 0.5), (20, 0.5)]


def test_the_report_writes_the_curve_and_every_realised_snr(tmp_path):
    write_suite_report({"test": outcomes()}, plan(), [], str(tmp_path), "suite", early_exit=True)
    with open(tmp_path / "square_queries.csv", newline="", encoding="utf-8") as f:
        curve = [(int(r["queries"]), float(r["UAR"])) for r in csv.DictReader(f)]
    assert curve == [(1, 1.0), (2, 1.0), (5, 0.75), (10, 0.5), (20, 0.5)]
    with open(tmp_path / "waveform_snr.csv", newline="", encoding="utf-8") as f:
        snrs = [(r["id"], float(r["snr_db"]), r["fooled"]) for r in csv.DictReader(f)]
    assert snrs == [("a", 31.5, "True"), ("c", 30.2, "False")]
    report = (tmp_path / "robustness.md").read_text(encoding="utf-8")
    rows = markdown_rows(report)
    assert ["test", "eps 0.1 (features linf)", "1.000", "1.000", "0.750", "0.500", "0.500"] in rows
    # Two utterances attacked: min, median (torch's: the lower middle value), max.
    assert ["test", "WaveformPGD", "30 dB SNR on the waveform", "2", "30.20", "30.20", "31.50"] in rows
