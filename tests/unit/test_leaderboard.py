"""The leaderboard from hand-built benchmark entries: its figures, its ranking, and what it refuses."""

import copy

import pytest

from ser_adv_brain.commands.benchmark import findings_of
from ser_adv_brain.reports.leaderboard import check_comparable, leaderboard_rows, write_leaderboard
from ser_adv_brain.tables import read_csv

EMOTIONS = ["anger", "anger", "sadness", "sadness"]


def entry(name, fold, correct, robust, tier="standard"):
    """An entry of ``name`` on ``fold``: four utterances, right or not on real data and at eps .02."""
    return {
        "name": name,
        "corpus": "EmoDB",
        "protocol": {"kind": "speaker folds", "n_folds": 5},
        "fold": fold,
        "seed": 1234,
        "architecture": {"model": "CNN4", "base_channels": 16},
        "training": {"yaml": f"{name}.yaml", "step": "CleanStep()"},
        "split": "test",
        "utterances": 4,
        "tier": tier,
        "early_exit": True,
        "attacks": ["APGD-CE"],
        "clean_UAR": None,
        "results": [
            {
                "threat_model": "features_linf",
                "budget": 0.02,
                "unit": "eps",
                "robust_UAR": None,
                "forward_passes_per_utterance": 100.0 + fold,
            }
        ],
        "per_utterance": [
            {"id": f"u{i}", "emotion": emotion, "correct": c, "robust": {"features_linf@0.02": r}}
            for i, (emotion, c, r) in enumerate(zip(EMOTIONS, correct, robust))
        ],
        "path": f"{name}/fold{fold}/entry.json",
    }


def entries():
    return [
        entry("cnn4_single", 0, [True, True, True, False], [False, False, True, False]),  # robust UARs .25
        entry("cnn4_single", 1, [True, True, True, True], [True, False, False, False]),  # and .25
        entry("cnn4_trades", 0, [True, True, True, False], [True, True, True, False]),  # .75
        entry("cnn4_trades", 1, [True, False, True, True], [True, False, True, True]),  # .75
    ]


def test_models_are_ranked_by_their_mean_robust_uar_over_the_folds():
    rows = leaderboard_rows(entries())
    assert [(row["rank"], row["name"]) for row in rows] == [(1, "cnn4_trades"), (2, "cnn4_single")]
    trades, single = rows
    assert trades["robust_UAR"] == pytest.approx(0.75) and single["robust_UAR"] == pytest.approx(0.25)
    assert single["clean_UAR"] == pytest.approx((0.75 + 1.0) / 2)
    assert trades["robust_low"] <= 0.75 <= trades["robust_high"]
    assert (trades["folds"], trades["seeds"], trades["forward_passes_per_utterance"]) == (2, 1, 100.5)


def test_models_with_the_same_robust_uar_share_a_rank_listed_by_clean_uar_in_any_reading_order():
    """At a budget that fools every model all of them are first, and the order does not follow the files'."""
    tied = entries() + [
        entry("cnn4_vanilla", 0, [True, True, True, True], [True, True, True, False]),  # .75, clean 1
        entry("cnn4_vanilla", 1, [True, True, True, True], [True, False, True, True]),  # .75, clean 1
    ]
    for reading in (tied, tied[::-1]):
        rows = leaderboard_rows(reading)
        assert [(row["rank"], row["name"]) for row in rows] == [
            (1, "cnn4_vanilla"),
            (1, "cnn4_trades"),
            (3, "cnn4_single"),
        ]


@pytest.mark.parametrize(
    "field, value",
    [
        ("tier", "quick"),
        ("corpus", "DEMoS"),
        ("split", "valid"),
        ("protocol", {"kind": "speaker folds", "n_folds": 10}),
    ],
)
def test_an_entry_evaluated_otherwise_is_refused_naming_its_file(field, value):
    mixed = entries()
    mixed[3] = {**mixed[3], field: value}
    with pytest.raises(ValueError, match=rf"cnn4_trades/fold1/entry.json: its {field} is"):
        check_comparable(mixed)


def test_models_on_other_folds_or_budgets_are_refused():
    fewer = entries()[:3]
    with pytest.raises(ValueError, match=r"cnn4_trades was evaluated on \(fold, seed\) \[\(0, 1234\)\]"):
        check_comparable(fewer)
    other = copy.deepcopy(entries())
    other[2]["results"][0]["budget"] = 0.04
    with pytest.raises(ValueError, match="its budgets"):
        check_comparable(other)
    # An over-the-air entry made before entries kept its two more figures cannot join one that has them.
    older, newer = copy.deepcopy(entries()), copy.deepcopy(entries())
    for e in newer:
        e["results"][0].update(robust_UAR_heard_directly=None, real_UAR_in_rooms=None)
    with pytest.raises(ValueError, match="cnn4_trades/fold0/entry.json: its figures"):
        check_comparable(newer[:2] + older[2:])
    with pytest.raises(ValueError, match="No entry.json found"):
        check_comparable([])


def test_a_model_on_fewer_folds_than_the_others_is_named_not_ranked_and_holds_back_no_one(tmp_path):
    """A folder where one training is still running, or a lab sent one fold: the others are ranked on their
    folds; where no model has every fold and seed of the folder, nothing is ranked."""
    partial = entries() + [entry("cnn4_rooms", 1, [True] * 4, [True] * 4)]  # robust 1.0 on its one fold
    markdown = write_leaderboard(partial, str(tmp_path))
    assert [(row["rank"], row["name"]) for row in read_csv(tmp_path / "leaderboard.csv")] == [
        ("1", "cnn4_trades"),
        ("2", "cnn4_single"),
    ]
    assert "Not ranked, evaluated on fewer folds and seeds than the models ranked: cnn4_rooms (fold 1, seed 1234)" in (
        markdown
    )
    with pytest.raises(ValueError, match=r"evaluated on \(fold, seed\) \[\(1, 1234\)\], cnn4_single on"):
        write_leaderboard([entries()[0], partial[-1]], str(tmp_path))


def with_snr_result(e, robust, budget=40.0):
    """``e`` with a result at ``budget`` dB SNR on the waveform too; ``robust``: each utterance's outcome there."""
    e["results"].append(
        {"threat_model": "waveform_snr", "budget": budget, "unit": "dB", "forward_passes_per_utterance": 10.0}
    )
    for row, outcome in zip(e["per_utterance"], robust):
        row["robust"][f"waveform_snr@{budget:g}"] = outcome
    return e


def waveform_only(name, fold, correct, robust, budget=40.0):
    """The entry of a model that takes the waveform: no features, so no Linf result."""
    e = entry(name, fold, correct, robust)
    e["results"] = []
    for row in e["per_utterance"]:
        row["robust"] = {}
    return with_snr_result(e, robust, budget)


def test_a_model_without_features_is_ranked_in_the_waveforms_tables_and_named_under_the_others(tmp_path):
    everyone = [with_snr_result(e, [False, False, True, False]) for e in entries()]  # .25 at 40 dB
    everyone += [
        waveform_only("wav2vec2_single", 0, [True] * 4, [True, False, True, False]),  # .5
        waveform_only("wav2vec2_single", 1, [True] * 4, [True, False, True, False]),
    ]
    rows = leaderboard_rows(everyone)
    ranked = {(r["threat_model"], r["rank"], r["name"]) for r in rows}
    assert ranked == {
        ("features_linf", 1, "cnn4_trades"),
        ("features_linf", 2, "cnn4_single"),
        ("waveform_snr", 1, "wav2vec2_single"),
        ("waveform_snr", 2, "cnn4_trades"),
        ("waveform_snr", 2, "cnn4_single"),
    }
    markdown = write_leaderboard(everyone, str(tmp_path))
    features_table = markdown.split("#### waveform_snr")[0]
    assert "Not ranked here, evaluated without this threat model: wav2vec2_single." in features_table
    # In a threat model they share, the budgets must still agree; the benchmark's table needs every budget.
    elsewhere = everyone[:4] + [
        waveform_only("wav2vec2_single", fold, [True] * 4, [True] * 4, budget=30.0) for fold in (0, 1)
    ]
    with pytest.raises(ValueError, match="wav2vec2_single/fold0/entry.json: its budgets"):
        leaderboard_rows(elsewhere)
    with pytest.raises(ValueError, match="its budgets"):
        check_comparable(everyone)
    # A model's folds are averaged: each of its entries has the same threat models.
    uneven = copy.deepcopy(everyone)
    uneven[5] = with_snr_result(entry("wav2vec2_single", 1, [True] * 4, [True] * 4), [True] * 4)
    with pytest.raises(ValueError, match=r"wav2vec2_single/fold1/entry.json: evaluated in \['features_linf'"):
        leaderboard_rows(uneven)


def test_the_leaderboard_files(tmp_path):
    markdown = write_leaderboard(entries(), str(tmp_path))
    assert "#### features_linf at 0.02" in markdown and (tmp_path / "leaderboard.csv").read_text().count("\n") == 3


def test_the_papers_findings_are_read_on_the_features_and_left_out_of_a_tier_without_them():
    """The paper's claims are about FGSM on the features: at the first Linf budget on the features, whatever
    comes first in the entry, and none in the audio tier."""
    trainings = ["cnn4_single", "cnn4_vanilla", "cnn4_similarity"]
    mixed = entry("cnn4_single", 0, [True] * 4, [True] * 4)
    waveform = {"threat_model": "waveform_snr", "budget": 40.0, "unit": "dB", "robust_UAR": None}
    mixed["results"].insert(0, waveform)
    findings = findings_of([mixed], trainings)
    assert len(findings) == 5 and {f[3] for f in findings} <= {"real", "features_linf@0.02"}
    audio = entry("cnn4_single", 0, [True] * 4, [True] * 4, tier="audio")
    audio["results"] = [waveform]
    assert findings_of([audio], trainings) == []
    # Waveform-trained vanilla and similarity are not the paper's trainings, listed first or alone.
    waveform_trained = ["cnn4_waveform_vanilla", "cnn4_waveform_similarity"]
    assert findings_of([mixed], [*waveform_trained, *trainings]) == findings
    assert len(findings_of([mixed], ["cnn4_single", *waveform_trained])) == 1  # the attack works, on single
