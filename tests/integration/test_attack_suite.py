"""The attack suite: robust UAR, the early exit, the evaluation and transfer commands, the masking checks.

One tiny model is single_run once (module fixture) and every test attacks it.
"""

import csv
import math
import os
import sys

import pytest
import soundfile
import torch
from helpers import TINY, KilledAfter, evaluation_brain, flags, markdown_rows, run_command, run_recipe

from ser_adv_brain.attacks import FGSM, PGD, SquareAttack, TransferAttack, UniversalPerturbation, WaveformPGD
from ser_adv_brain.evaluation import suite as suite_module
from ser_adv_brain.evaluation.masking import NONE_FIRED, destroy_plan, masking_report
from ser_adv_brain.evaluation.progress import BatchProgress
from ser_adv_brain.evaluation.suite import SplitOutcomes, evaluate_suite, suite_entries, suite_plan
from ser_adv_brain.interface import EmotionRecognizer
from ser_adv_brain.reports.suite_report import write_suite_report
from ser_adv_brain.runs.finish import report_attacks
from ser_adv_brain.runs.reload import TrainedModel

pytestmark = pytest.mark.trained  # every test attacks a model trained here

HPARAMS = "hparams/cnn4_single.yaml"
# Wider, longer clips and 6 epochs: a tiny model that is right more often than chance, so attacks have work to do.
TRAIN_FLAGS = [
    *flags(**{**TINY, "base_channels": 4, "n_frames": 100, "number_of_epochs": 6}),
    "--eval_eps=[0.0, 0.1]",
    "--noprogressbar",
]
BUDGETS = {"features_linf": [0.005, 0.01]}  # small enough that the tiny model survives some attacks


def bim(eps=0.05, **options):
    """PGD without random start: deterministic, so runs with and without early exit compare exactly."""
    return PGD(eps=eps, steps=5, random_start=False, eta=None, label_source="target", **options)


def fgsm():
    return FGSM(eps=0.05, eta=None, label_source="target")


@pytest.fixture(scope="module")
def single_run(tiny_corpus, tmp_path_factory):
    """A tiny single-training run of the tiny corpus (its own end-of-run suite included) and a Brain over it."""
    tmp = tmp_path_factory.mktemp("suite")
    out = str(tmp / "single")
    run_flags = [*TRAIN_FLAGS, f"--data_folder={tiny_corpus}", f"--output_folder={out}"]
    run_recipe(HPARAMS, *run_flags)
    brain, datasets, hparams = evaluation_brain(HPARAMS, *run_flags)
    return {"out": out, "brain": brain, "datasets": datasets, "hparams": hparams, "tmp": tmp, "flags": run_flags}


def run_suite(single_run, attacks, early_exit, budgets=BUDGETS, destroy_eps=None, split="test", model=None):
    """Outcomes of ``attacks`` on a split of the single_run model (or of ``model`` put in its place)."""
    brain = single_run["brain"]
    entries = suite_entries(attacks)
    plan = suite_plan(entries, budgets) + destroy_plan(entries, destroy_eps)
    original = brain.modules.model
    if model is not None:
        brain.on_evaluate_start(max_key="UAR")  # restore into the original before wrapping it
        brain.modules.model = model(original)
    try:
        return evaluate_suite(brain, single_run["datasets"][split], plan, early_exit, {"batch_size": 4}), plan
    finally:
        brain.modules.model = original


def test_the_suite_attacks_the_checkpoint_the_run_tested_which_beats_chance(single_run):
    """The suite's real-data UAR is the run's own (its ``robustness.csv``, test, eps 0); the tiny model is right
    more often than chance (it scored twice chance on every kernel setting measured: ``docs/testing.md``)."""
    outcomes, _ = run_suite(single_run, [fgsm()], early_exit=True)
    rows = read_csv(os.path.join(single_run["out"], "robustness.csv"))
    real = next(float(r["UAR"]) for r in rows if r["split"] == "test" and float(r["eps"]) == 0)
    assert outcomes.uar(outcomes.clean_correct) == pytest.approx(real, abs=1e-12)
    assert real > 1.5 / outcomes.n_classes


def test_robust_uar_is_at_most_every_single_attacks_uar(single_run):
    outcomes, plan = run_suite(single_run, [fgsm(), bim(), PGD(eps=0.05, steps=3, eta=None, seed=1)], early_exit=False)
    for group, budget, entries in plan:
        robust = outcomes.uar(outcomes.robust_after(group, budget))
        alone = [outcomes.uar(outcomes.clean_correct & ~outcomes.fooled((group, budget, e.name))) for e in entries]
        assert all(outcomes.measured_alone((group, budget, e.name)) for e in entries)
        assert all(robust <= uar + 1e-12 for uar in alone), (budget, robust, alone)
    # Per utterance: correct on real data and under every attack (not the lowest of the attacks' UARs).
    for group, budget, entries in plan:
        # Nested budgets: what fools within a smaller budget fools within this one.
        keys = [key for key in outcomes.keys if key[0] == group and key[1] <= budget]
        fooled = torch.stack([outcomes.fooled(key) for key in keys]).any(0)
        assert torch.equal(outcomes.robust_after(group, budget), outcomes.clean_correct & ~fooled)


def test_early_exit_changes_no_result_only_the_cost(single_run):
    # BIM fools more than FGSM: its share of the work must be right. PGD's random starts and restarts and
    # Square's squares are drawn per utterance, so the batches the early exit leaves change none of them.
    random_pgd = PGD(eps=0.05, steps=2, restarts=2, eta=None, label_source="target", seed=3)
    square = SquareAttack(eps=0.05, max_queries=15, p_init=0.3, eta=None, label_source="target", seed=4)
    attacks = [square, random_pgd, fgsm(), bim()]
    budgets = {"features_linf": [0.005, 0.02]}  # at .02 Square fools some utterances, not all
    lazy, plan = run_suite(single_run, attacks, early_exit=True, budgets=budgets)
    full, _ = run_suite(single_run, attacks, early_exit=False, budgets=budgets)
    assert lazy.ids == full.ids and torch.equal(lazy.clean, full.clean)
    still_correct = lazy.clean_correct  # the plan holds one threat model, smallest budget first
    for group, budget, entries in plan:
        for entry in entries:
            key = (group, budget, entry.name)
            # Each attack ran on exactly the utterances that were still correct, and found the same.
            assert torch.equal(lazy.predictions[key] >= 0, still_correct)
            assert torch.equal(
                lazy.robust_after(group, budget, entry.name), full.robust_after(group, budget, entry.name)
            )
            still_correct = lazy.robust_after(group, budget, entry.name)
    # The first attack at the smallest budget ran on every utterance correct on real data: its own UAR is known.
    first = (*plan[0][:2], plan[0][2][0].name)
    assert lazy.measured_alone(first)
    assert torch.equal(lazy.fooled(first) & lazy.clean_correct, full.fooled(first) & full.clean_correct)
    assert lazy.attacked_count < full.attacked_count
    print(f"utterance-attacks: {lazy.attacked_count} with early exit, {full.attacked_count} without")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_evaluate_command_writes_the_suite_and_the_masking_checks(single_run):
    attacks = (
        "[!new:ser_adv_brain.attacks.PGD {eps: 0.1, steps: 3, eta: null, label_source: target},"
        " !new:ser_adv_brain.attacks.FGSM {eps: 0.1, eta: null, label_source: target}]"
    )
    out = single_run["out"]
    run_command(
        [
            sys.executable,
            "-m",
            "ser_adv_brain.evaluate_robustness",
            out,
            f"--attacks={attacks}",
            "--suite_budgets={features_linf: [0.05, 0.2]}",
            "--masking_check_eps=20.0",
        ]
    )
    rows = read_csv(os.path.join(out, "attack_suite.csv"))
    assert {(r["split"], float(r["budget"]), r["attack"]) for r in rows} == {
        (split, budget, attack)
        for split in ("valid", "test")
        for budget in (0.05, 0.2)
        for attack in ("PGD-3", "FGSM", "robust")
    }
    for row in rows:
        if row["attack"] == "robust":
            below = [
                r
                for r in rows
                if r["split"] == row["split"] and r["budget"] == row["budget"] and r["attack"] != "robust"
            ]
            assert all(float(row["UAR_worst_so_far"]) <= float(r["UAR_worst_so_far"]) + 1e-12 for r in below)
    report = open(os.path.join(out, "robustness.md"), encoding="utf-8").read()
    # The paper's FGSM table comes first, unchanged; the suite and the checks follow.
    assert report.index("| data ") < report.index("**robust UAR**") < report.index("Gradient-masking checks")
    assert ["data", "eps", "Dev UAR", "Test UAR"] in markdown_rows(report)
    assert read_csv(os.path.join(out, "robustness.csv"))[0].keys() >= {"split", "eps", "data", "UAR"}
    # The batch-by-batch progress is dropped once the reports are written.
    assert not [f for f in os.listdir(out) if f.startswith("suite_progress")]


def test_evaluate_budgets_may_name_a_threat_model_the_runs_yaml_has_no_budgets_for(single_run, tmp_path):
    """--budgets replaces the run's suite_budgets: the checks at loading must not refuse a threat model that only
    --budgets names (the run's yaml has features_linf and waveform_snr, not waveform_linf)."""
    attack = "!new:ser_adv_brain.attacks.WaveformPGD {eps: 0.001, steps: 1, norm: linf, label_source: target}"
    run_command(
        [
            sys.executable,
            "-m",
            "ser_adv_brain.commands.evaluate",
            single_run["out"],
            f"--attacks=[{attack}]",
            "--budgets={waveform_linf: [0.001]}",
            "--splits=test",
            f"--output_folder={tmp_path}",
            "--noprogressbar",
        ]
    )
    rows = read_csv(tmp_path / "attack_suite.csv")
    assert {(r["threat_model"], float(r["budget"])) for r in rows} == {("waveform_linf", 0.001)}


def test_a_killed_evaluation_resumes_at_its_first_batch_not_done_with_the_same_outcomes(
    single_run, tmp_path, monkeypatch
):
    """Random attacks (PGD restarts, Square's squares) and a waveform attack (its realised SNR) included: the
    resumed evaluation attacks only the batches not done, and its outcomes, cost included, are the
    uninterrupted run's, utterance by utterance."""
    brain, split = single_run["brain"], single_run["datasets"]["test"]
    attacks = [
        PGD(eps=0.05, steps=2, restarts=2, eta=None, label_source="target", seed=3),
        SquareAttack(eps=0.05, max_queries=10, p_init=0.3, eta=None, label_source="target", seed=4),
        WaveformPGD(eps=40.0, steps=2, label_source="target"),
    ]
    plan = suite_plan(suite_entries(attacks), {"features_linf": [0.005, 0.02], "waveform_snr": [40.0]})
    calls = []
    attack_once = suite_module.run_attack
    monkeypatch.setattr(suite_module, "run_attack", lambda *args: calls.append(1) or attack_once(*args))

    def evaluate(progress=None):
        calls.clear()
        return evaluate_suite(brain, split, plan, True, {"batch_size": 4}, progress=progress)

    whole, whole_calls = evaluate(), len(calls)
    path = str(tmp_path / "suite_progress_test.json")
    with pytest.raises(KeyboardInterrupt):
        evaluate(KilledAfter(path, "this evaluation", batches=2))
    killed_calls = len(calls)
    resumed = evaluate(BatchProgress(path, "this evaluation"))
    assert len(split) > 8 and 0 < killed_calls and killed_calls + len(calls) == whole_calls
    assert resumed.ids == whole.ids and torch.equal(resumed.clean, whole.clean)
    assert torch.equal(resumed.gradient_ok, whole.gradient_ok)
    for key in whole.keys:
        assert torch.equal(resumed.predictions[key], whole.predictions[key]), key
        for field in whole.details:
            assert torch.allclose(resumed.details[field][key], whole.details[field][key], equal_nan=True)
    assert resumed.attacked_count == whole.attacked_count and resumed.forward_rows == whole.forward_rows
    # Another evaluation's progress (another checkpoint, attack or split) is set aside, never mixed in.
    restarted = evaluate(BatchProgress(path, "another evaluation"))
    assert len(calls) == whole_calls and os.path.isfile(f"{path}.other")
    assert all(torch.equal(restarted.predictions[key], whole.predictions[key]) for key in whole.keys)


def test_transfer_matrix_diagonal_is_the_white_box_attack(single_run):
    second = str(single_run["tmp"] / "second")
    second_flags = [f for f in single_run["flags"] if not f.startswith(("--output_folder", "--number_of_epochs"))]
    # Another model on the same split: vanilla adversarial training, same seed.
    run_recipe(
        "hparams/cnn4_vanilla.yaml",
        *second_flags,
        "--number_of_epochs=2",
        "--warmup_steps=1",
        f"--output_folder={second}",
    )
    out = str(single_run["tmp"] / "transfer")
    attack = "!new:ser_adv_brain.attacks.FGSM {eps: 0.05, eta: null, label_source: target}"
    run_command(
        [
            sys.executable,
            "-m",
            "ser_adv_brain.transfer",
            single_run["out"],
            second,
            f"--attack={attack}",
            "--eps=[0.05, 0.2]",
            f"--output_folder={out}",
        ]
    )
    rows = read_csv(os.path.join(out, "transfer.csv"))
    matrix = {(r["eps"], os.path.normpath(r["source"]), os.path.normpath(r["target"])): float(r["UAR"]) for r in rows}
    assert len([key for key in matrix if key[0] != "real"]) == 2 * 2 * 2
    outcomes, _ = run_suite(single_run, [fgsm()], early_exit=False, budgets={"features_linf": [0.05, 0.2]})
    for eps in (0.05, 0.2):
        # FGSM is deterministic: the white-box cell is the suite's FGSM on every utterance.
        white_box = outcomes.uar(outcomes.predictions[("features_linf", eps, "FGSM")] == outcomes.targets)
        assert matrix[
            (str(eps), os.path.normpath(single_run["out"]), os.path.normpath(single_run["out"]))
        ] == pytest.approx(white_box, abs=1e-4)
    assert markdown_rows(open(os.path.join(out, "transfer.md"), encoding="utf-8").read())[0] == [
        "source \\ target",
        "1",
        "2",
    ]
    # The suite's transfer plug-in, with the second model as source, finds the matrix's cell and counts in robust UAR.
    transfer = TransferAttack(source=second, attack=fgsm()).attach_source(TrainedModel(second, ["--device=cpu"]))
    outcomes, plan = run_suite(single_run, [fgsm(), transfer], early_exit=False, budgets={"features_linf": [0.05, 0.2]})
    for eps in (0.05, 0.2):
        key = ("features_linf", eps, "Transfer FGSM")
        alone = outcomes.uar(outcomes.clean_correct & ~outcomes.fooled(key))
        unattacked = outcomes.uar(outcomes.predictions[key] == outcomes.targets)
        assert unattacked == pytest.approx(
            matrix[(str(eps), os.path.normpath(second), os.path.normpath(single_run["out"]))], abs=1e-4
        )
        assert outcomes.uar(outcomes.robust_after("features_linf", eps)) <= alone + 1e-12
        assert torch.equal(
            outcomes.robust_after("features_linf", eps),
            outcomes.robust_after("features_linf", eps, "FGSM") & ~outcomes.fooled(key),
        )
    with pytest.raises(ValueError, match="not a training output folder"):
        TransferAttack(source=str(single_run["tmp"]), attack=fgsm())
    with pytest.raises(ValueError, match="white-box Linf feature attack"):
        TransferAttack(source=second, attack=WaveformPGD(eps=30.0))


class ZeroGradient(torch.nn.Module):
    """A model that masks its gradient: it sees its input rounded, and rounding has zero derivative."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, feats):
        return self.model(torch.round(feats * 100) / 100)


def sentences(outcomes, plan):
    return masking_report({"test": outcomes}, plan)


def test_masking_checks_fire_on_a_model_with_zero_input_gradient(single_run):
    outcomes, plan = run_suite(single_run, [bim(), fgsm()], early_exit=True, destroy_eps=20.0, model=ZeroGradient)
    report = sentences(outcomes, plan)
    assert "the input gradient of the loss is zero or not finite for" in report
    assert "a budget that destroys the input" in report
    assert NONE_FIRED not in report


def test_masking_check_fires_when_an_iterative_attack_is_weaker_than_fgsm(single_run):
    stuck = bim(rel_step_size=0.0)  # an iterative attack that never moves
    outcomes, plan = run_suite(single_run, [stuck, fgsm()], early_exit=True, budgets={"features_linf": [0.2]})
    assert "the iterative attack is weaker than FGSM at the same budget" in sentences(outcomes, plan)


def test_masking_check_fires_when_a_black_box_attack_beats_the_white_box_one(single_run):
    class Noise(FGSM):
        """A query-free black box: the sign of a fixed random direction (here, against a masked model)."""

        black_box = True

        def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, keys=None):
            direction = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0))
            return inputs + eps * direction.sign()

    outcomes, plan = run_suite(
        single_run,
        [bim(), Noise(eps=1.0, eta=None)],
        early_exit=True,
        budgets={"features_linf": [3.0]},
        model=ZeroGradient,
    )
    assert "it beats the white-box attacks" in sentences(outcomes, plan)


def test_no_masking_check_fires_on_the_normal_model(single_run):
    outcomes, plan = run_suite(single_run, [bim(), fgsm()], early_exit=True, destroy_eps=20.0)
    assert sentences(outcomes, plan).strip().endswith(NONE_FIRED)


def test_outcomes_of_ddp_ranks_join_sorted_by_utterance():
    outcomes = SplitOutcomes([("features_linf", 0.1, "FGSM")], n_classes=3)
    key = ("features_linf", 0.1, "FGSM")
    details = {"queries": {key: torch.tensor([3.0, float("nan")])}, "snr_db": {key: torch.tensor([float("nan")] * 2)}}
    outcomes.append(
        ["b", "a"],
        torch.tensor([1, 0]),
        torch.tensor([1, 2]),
        torch.tensor([True, False]),
        {key: torch.tensor([0, -1])},
        details,
    )
    outcomes.gather()
    assert outcomes.ids == ["a", "b"] and outcomes.targets.tolist() == [0, 1]
    assert outcomes.predictions[key].tolist() == [-1, 0] and outcomes.gradient_ok.tolist() == [False, True]
    assert outcomes.details["queries"][key][0].isnan() and outcomes.details["queries"][key][1] == 3.0


def test_attack_file_writes_a_wav_within_its_snr_budget(single_run):
    recognizer = EmotionRecognizer.from_hparams(
        source=os.path.join(single_run["out"], "interface"), savedir=str(single_run["tmp"] / "pretrained")
    )
    path = sorted(single_run["datasets"]["test"].data[i]["wav"] for i in single_run["datasets"]["test"].data_ids)[0]
    out_wav = str(single_run["tmp"] / "adversarial.wav")
    result = recognizer.attack_file(path, WaveformPGD(eps=30.0, steps=3), out_wav)
    audio, rate = soundfile.read(out_wav, dtype="float32")
    assert soundfile.info(out_wav).subtype == "PCM_16" and rate == single_run["hparams"]["sample_rate"]
    clean = recognizer.prepare_batch(recognizer.load_audio(path))[0].numpy()
    snr = 10 * math.log10((clean.astype("float64") ** 2).sum() / ((audio - clean).astype("float64") ** 2).sum())
    assert 30.0 <= snr < 60.0 and result["snr_db"] == pytest.approx(snr, abs=1e-3)
    labels = set(single_run["hparams"]["label_encoder"].lab2ind)
    assert result["before"] in labels and result["after"] in labels
    assert result["after"] == recognizer.classify_file(out_wav)[3][0]
    with pytest.raises(ValueError, match="waveform-domain attack"):
        recognizer.attack_file(path, fgsm(), out_wav)


def test_success_matrix_command(single_run):
    run_command(
        [
            sys.executable,
            "-m",
            "ser_adv_brain.targeted_success",
            single_run["out"],
            "--attack=!new:ser_adv_brain.attacks.FGSM {eps: 0.2, eta: null}",
        ]
    )
    rows = read_csv(os.path.join(single_run["out"], "success_matrix.csv"))
    assert len(rows) == single_run["hparams"]["n_classes"] and all(
        0 <= float(v) <= 1 for r in rows for v in list(r.values())[1:]
    )


def test_report_gives_square_uar_by_queries_and_every_realised_snr(single_run, tmp_path):
    """The report's curve and SNRs are those of the run's own outcomes (exact figures on hand-built outcomes:
    ``tests/unit/test_suite_report.py``)."""
    square = SquareAttack(eps=0.02, max_queries=20, p_init=0.3, eta=None, label_source="target")
    attacks = [square, fgsm(), WaveformPGD(eps=30.0, steps=1, label_source="target")]  # Square first: it has work
    # At eps 2 (two standard deviations of every feature) Square's first query already moves the whole
    # spectrum: it fools utterances by a margin no host's floats can take away.
    outcomes, plan = run_suite(
        single_run, attacks, early_exit=True, budgets={"features_linf": [2.0], "waveform_snr": [30]}
    )
    write_suite_report({"test": outcomes}, plan, [], str(tmp_path), "suite", early_exit=True)
    curve = [(int(r["queries"]), float(r["UAR"])) for r in read_csv(tmp_path / "square_queries.csv")]
    assert [q for q, _ in curve] == [1, 2, 5, 10, 20]
    key = ("features_linf", 2.0, "SquareAttack")
    # One query (the clean input) fools nothing; the full budget is the suite's worst case after Square.
    assert curve[0][1] == pytest.approx(outcomes.uar(outcomes.robust_before(*key)))
    assert curve[-1][1] == pytest.approx(outcomes.uar(outcomes.robust_after(*key)))
    assert all(later <= earlier + 1e-12 for (_, earlier), (_, later) in zip(curve, curve[1:]))
    assert curve[-1][1] < curve[0][1]
    snrs = read_csv(tmp_path / "waveform_snr.csv")
    attacked = outcomes.predictions[("waveform_snr", 30.0, "WaveformPGD")] >= 0
    assert sorted(r["id"] for r in snrs) == sorted(i for i, a in zip(outcomes.ids, attacked) if a)
    assert all(float(r["snr_db"]) >= 30.0 for r in snrs)
    report = open(tmp_path / "robustness.md", encoding="utf-8").read()
    assert "SquareAttack: UAR against the number of queries" in report and "Realised SNR" in report


def test_universal_perturbation_learns_on_train_joins_the_suite_as_its_own_group_and_is_kept(
    single_run, tmp_path, monkeypatch
):
    """The end-of-run reports learn ``v`` on the training split (its utterances, none of the test ones) before
    the test split is attacked, report the group with its robust UAR and realised SNRs, keep ``v`` with its
    wav, and read it back when the run is evaluated again."""
    brain, datasets = single_run["brain"], single_run["datasets"]
    hparams = {**single_run["hparams"], "output_folder": str(tmp_path)}

    def report(universal):
        suite = [WaveformPGD(eps=20.0, steps=1, label_source="target"), universal]
        budgets = {"waveform_snr": [20.0], "waveform_universal": [20.0]}
        settings = dict(suite_budgets=budgets, suite_early_exit=True, masking_check_eps=0.0)
        return report_attacks(
            brain,
            hparams,
            datasets,
            "UAR",
            fgsm(),
            [0.0],
            suite,
            **settings,
            splits=("test",),
            output_folder=str(tmp_path),
        )

    universal = UniversalPerturbation(eps=20.0, epochs=1, label_source="target")
    _, suite = report(universal)
    learnt = universal.learnt[20.0]
    assert list(learnt.training_ids) == sorted(datasets["train"].data_ids)
    assert not set(learnt.training_ids) & set(datasets["test"].data_ids)
    rows = read_csv(tmp_path / "attack_suite.csv")
    assert {(r["threat_model"], r["attack"]) for r in rows} == {
        ("waveform_snr", "WaveformPGD"),
        ("waveform_snr", "robust"),
        ("waveform_universal", "Universal"),
        ("waveform_universal", "robust"),
    }
    outcomes = suite["test"]
    robust = next(r for r in rows if r["threat_model"] == "waveform_universal" and r["attack"] == "robust")
    assert float(robust["UAR_worst_so_far"]) == pytest.approx(
        outcomes.uar(outcomes.robust_after("waveform_universal", 20.0))
    )
    attacked = outcomes.predictions[("waveform_universal", 20.0, "Universal")] >= 0
    snrs = [r for r in read_csv(tmp_path / "waveform_snr.csv") if r["threat_model"] == "waveform_universal"]
    assert sorted(r["id"] for r in snrs) == sorted(i for i, a in zip(outcomes.ids, attacked) if a)
    [kept] = (tmp_path / "universal_perturbations").glob("*.pt")
    assert (
        kept.with_suffix(".wav").is_file()
        and (tmp_path / "universal_perturbations" / f"{kept.stem}_loud.wav").is_file()
    )
    assert "Universal perturbations (learnt on the training split" in (tmp_path / "robustness.md").read_text()

    monkeypatch.setattr(UniversalPerturbation, "learn", lambda *args: pytest.fail("learnt again"))
    again = UniversalPerturbation(eps=20.0, epochs=1, label_source="target")
    report(again)
    assert torch.equal(again.learnt[20.0].perturbation, learnt.perturbation)
