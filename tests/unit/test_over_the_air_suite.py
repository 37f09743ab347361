"""The over-the-air threat model in the attack suite: what "correct" means there, the early exit, the report's
three figures (in the held-out rooms, heard directly, real data in the rooms), the entry and benchmark that keep
them, and its masking check."""

import csv

import pytest
import torch
from helpers import RecipeBrain, entry_hparams, markdown_rows

from ser_adv_brain.attacks import OverTheAirPGD
from ser_adv_brain.audio.rooms import SimulatedRooms
from ser_adv_brain.data.dataio import dataio_prep, manifests_of
from ser_adv_brain.evaluation.masking import DESTROY_SNR_DB, destroy_plan, masking_sentences
from ser_adv_brain.evaluation.suite import SplitOutcomes, evaluate_suite, suite_entries, suite_plan
from ser_adv_brain.reports.benchmark_report import figures
from ser_adv_brain.reports.entry import make_entry
from ser_adv_brain.reports.suite_report import write_suite_report
from ser_adv_brain.training.brain import build_brain
from ser_adv_brain.training_steps import CleanStep

SMALL = dict(length=[3, 4], width=[3, 4], height=[2.5, 3], rt60=[0.1, 0.2], max_rir_seconds=0.02)
GROUP = "waveform_room_snr"


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    return SimulatedRooms(str(tmp_path_factory.mktemp("rooms")), n_attack=3, n_held_out=2, **SMALL)


def hand_built(rooms):
    """Four utterances of classes 0, 0, 1, 1, all correct on real data heard directly; b is wrong in a held-out
    room with no attack. At 30 dB the attack fools a and d in the rooms, a and d heard directly. At 20 dB (early
    exit: run on b and c, which are not yet fooled both ways) it fools c in the rooms and b heard directly."""
    name = "OverTheAirPGD-10"
    keys = [(GROUP, 30.0, name), (GROUP, 20.0, name)]
    split = SplitOutcomes(keys, n_classes=2, room_groups=[GROUP])
    nan = float("nan")
    predictions = {keys[0]: torch.tensor([1, 1, 1, 0]), keys[1]: torch.tensor([-1, 1, 0, -1])}
    directly = {keys[0]: torch.tensor([1.0, 0, 1, 0]), keys[1]: torch.tensor([nan, 1, 1, nan])}
    details = {
        "queries": {key: torch.full((4,), nan) for key in keys},
        "snr_db": {key: torch.full((4,), 31.0) for key in keys},
        "heard_directly": directly,
    }
    labels = torch.tensor([0, 0, 1, 1])
    room_clean = {GROUP: torch.tensor([0, 1, 1, 1])}
    split.append(
        ["a", "b", "c", "d"], labels, labels, torch.ones(4, dtype=torch.bool), predictions, details, room_clean
    )
    attack = OverTheAirPGD(eps=30.0, rooms=rooms)
    entries = suite_entries([attack])
    return split.gather(), suite_plan(entries, {GROUP: [30, 20]})


def test_correct_over_the_air_means_right_unattacked_in_every_room_and_under_every_attack_in_every_room(rooms):
    outcomes, _ = hand_built(rooms)
    assert outcomes.correct_unattacked(GROUP).tolist() == [True, False, True, True]
    assert outcomes.robust_after(GROUP, 30.0).tolist() == [False, False, True, False]
    assert outcomes.robust_after(GROUP, 20.0).tolist() == [False, False, False, False]  # nested: 30 dB counts
    assert outcomes.robust_after(GROUP, 30.0, directly=True).tolist() == [False, True, True, False]
    assert outcomes.robust_after(GROUP, 20.0, directly=True).tolist() == [False, False, True, False]


def test_the_suite_reports_the_room_group_in_the_rooms_heard_directly_and_real_data_in_the_rooms(rooms, tmp_path):
    outcomes, plan = hand_built(rooms)
    write_suite_report({"test": outcomes}, plan, [], str(tmp_path), "suite", early_exit=True)
    rows = markdown_rows((tmp_path / "robustness.md").read_text(encoding="utf-8"))
    assert ["attack", "SNR dB 30", "SNR dB 20"] in rows
    assert ["OverTheAirPGD-10", "0.250", "0.000"] in rows
    assert ["**robust UAR**", "0.250", "0.000"] in rows
    assert ["robust UAR of the same audio heard directly", "0.500", "0.250"] in rows
    assert ["real data, held-out rooms", "0.750", "0.750"] in rows
    assert "2 held-out rooms, the worst per utterance" in (tmp_path / "robustness.md").read_text(encoding="utf-8")
    with open(tmp_path / "attack_suite.csv", newline="", encoding="utf-8") as f:
        table = {(r["attack"], float(r["budget"])): r for r in csv.DictReader(f)}
    assert float(table[("robust", 20.0)]["UAR_worst_so_far"]) == 0.0
    assert float(table[("robust, heard directly", 30.0)]["UAR_worst_so_far"]) == 0.5
    assert float(table[("real data, held-out rooms", 20.0)]["UAR_alone"]) == 0.75


def test_an_entry_keeps_the_room_groups_figures_heard_directly_and_in_the_rooms_and_the_benchmark_reads_them(
    rooms, tmp_path
):
    outcomes, plan = hand_built(rooms)
    hparams = entry_hparams(tmp_path, "cnn4_single")
    entry = make_entry(hparams, outcomes, plan, "audio", "test", True, CleanStep(), "cpu")
    at_30, at_20 = entry["results"]
    assert (at_30["robust_UAR"], at_30["robust_UAR_heard_directly"], at_30["real_UAR_in_rooms"]) == (0.25, 0.5, 0.75)
    assert (at_20["robust_UAR"], at_20["robust_UAR_heard_directly"], at_20["real_UAR_in_rooms"]) == (0.0, 0.25, 0.75)
    b = entry["per_utterance"][1]
    assert b["over_the_air"] == {
        f"{GROUP}@30 heard directly": True,
        f"{GROUP}@20 heard directly": False,
        f"{GROUP} real data in the rooms": False,
    }
    # The benchmark's figures of one entry are the entry's own UARs, the two over-the-air ones included.
    (means,) = figures([{**entry, "path": "entry.json"}]).values()
    assert {key: value.mean for key, value in means.items()} == pytest.approx(
        {
            "real": 1.0,
            f"{GROUP}@30": 0.25,
            f"{GROUP}@20": 0.0,
            f"{GROUP}@30 heard directly": 0.5,
            f"{GROUP}@20 heard directly": 0.25,
            f"{GROUP} real data in the rooms": 0.75,
        }
    )


def test_the_destroying_check_runs_over_the_air_and_says_when_the_rooms_keep_the_model_right(rooms):
    entries = suite_entries([OverTheAirPGD(eps=30.0, rooms=rooms, steps=3)])
    (step,) = destroy_plan(entries, 10.0)  # no feature attack: the over-the-air step alone
    assert step.group == "destroy_waveform_room_snr" and step.budget == DESTROY_SNR_DB
    key = (step.group, step.budget, "OverTheAirPGD-3")
    split = SplitOutcomes([key], n_classes=2, room_groups=[step.group])
    labels, nan = torch.tensor([0, 0, 1, 1]), torch.full((4,), float("nan"))
    details = {"queries": {key: nan}, "snr_db": {key: nan}, "heard_directly": {key: torch.tensor([1.0, 1, 0, 0])}}
    # Fooled heard directly every time, but in the held-out rooms only a: robust UAR .75 there, above chance.
    split.append(
        ["a", "b", "c", "d"],
        labels,
        labels,
        torch.ones(4, dtype=torch.bool),
        {key: torch.tensor([1, 0, 1, 1])},
        details,
        {step.group: labels},
    )
    (sentence,) = masking_sentences(split.gather(), [step], "test")
    assert "-10 dB SNR on the waveform, heard in held-out rooms" in sentence and "0.750" in sentence
    assert destroy_plan(entries, None) == []


def test_attacks_of_one_threat_model_share_their_held_out_rooms(rooms, tmp_path):
    other = SimulatedRooms(str(tmp_path), n_attack=3, n_held_out=3, **SMALL)
    with pytest.raises(ValueError, match="attack_suite"):
        suite_entries([OverTheAirPGD(eps=30.0, rooms=rooms), OverTheAirPGD(eps=30.0, rooms=other, steps=3)])


class MeanLinear(torch.nn.Module):
    """Logits linear in the frame-averaged features: its predictions vary with the input, as an untrained CNN's
    (nearly constant) do not, so the rooms and the attack have something to change."""

    def __init__(self, n_mels, n_classes):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_mels, n_classes, generator=torch.Generator().manual_seed(0)))

    def forward(self, feats):
        pooled = feats.mean(dim=1)
        return pooled @ self.weight, pooled


@pytest.fixture
def brain_and_split(tiny_hparams):
    """A hand-built model whose targets are its own predictions on real data: every utterance starts correct,
    so the rooms and the attack decide everything."""
    hparams = tiny_hparams("cnn4_single")
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, {"device": "cpu", "noprogressbar": True}, RecipeBrain)
    brain.fit_normalizer(datasets["train"], hparams["test_dataloader_options"])
    brain.modules.model = MeanLinear(hparams["n_mels"], hparams["n_classes"])

    def own_predictions(batch):
        with torch.no_grad():
            return brain.model(brain.compute_features(batch.sig.data))[0].argmax(dim=-1)

    brain.targets = own_predictions
    return brain, datasets["test"]


def test_early_exit_changes_no_over_the_air_figure_only_the_cost(brain_and_split, rooms):
    brain, split = brain_and_split
    attacks = [OverTheAirPGD(eps=40.0, rooms=rooms, steps=2, samples=2, seed=1, label_source="target")]
    plan = suite_plan(suite_entries(attacks), {GROUP: [40, 30]})
    lazy = evaluate_suite(brain, split, plan, True, {"batch_size": 4})
    full = evaluate_suite(brain, split, plan, False, {"batch_size": 4})
    assert bool(lazy.clean_correct.all()) and torch.equal(lazy.room_clean[GROUP], full.room_clean[GROUP])
    for _, budget, _ in plan:
        for directly in (False, True):
            assert torch.equal(
                lazy.robust_after(GROUP, budget, directly=directly), full.robust_after(GROUP, budget, directly=directly)
            )
    # At 40 dB every utterance ran; at 30 dB those not yet fooled both in the rooms and heard directly.
    first, second = [(GROUP, budget, "OverTheAirPGD-2") for budget in (40.0, 30.0)]
    assert bool((lazy.predictions[first] >= 0).all())
    # Scored in the held-out rooms, which change some predictions of the audio heard directly.
    assert not torch.equal(lazy.predictions[first], lazy.details["heard_directly"][first].long())
    alive = lazy.robust_after(GROUP, 40.0) | lazy.robust_after(GROUP, 40.0, directly=True)
    assert torch.equal(lazy.predictions[second] >= 0, alive)
    assert lazy.attacked_count < full.attacked_count
    # The rooms alone cost some utterances (.30 of UAR left), the attack more (.06 left at 30 dB).
    assert 0 < lazy.uar(lazy.correct_unattacked(GROUP)) < 1
    assert lazy.uar(lazy.robust_after(GROUP, 30.0)) < lazy.uar(lazy.correct_unattacked(GROUP))
