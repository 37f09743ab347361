"""The fake-data detector: its metrics, its adaptive attack, its command on a tiny trained run, its interface."""

import csv
import os
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO_ROOT, markdown_rows, run_command

from ser_adv_brain.attacks import PGD, DetectorAwarePGD
from ser_adv_brain.commands.detector import detector_overrides, load_detector_hparams, main
from ser_adv_brain.detectors import DetectedClassifier, EmbeddingDetector
from ser_adv_brain.interface import EmotionRecognizer
from ser_adv_brain.metrics import detection_threshold, roc_auc, tpr_at_fpr
from ser_adv_brain.models import CNN4

DETECTOR_YAML = os.path.join(REPO_ROOT, "hparams", "detector.yaml")
# The shipped yaml at test size: a budget the tiny model's detector can learn in seconds, few steps and
# queries; PGD and the adaptive attack share budget and steps, so only the detector term tells them apart.
TINY_DETECTOR_FLAGS = [
    "--number_of_epochs=8",
    "--lr=0.01",
    "--noprogressbar",
    "--attack=!new:ser_adv_brain.attacks.FGSM {eps: 0.3, eta: null, label_source: target}",
    "--unseen_attacks=[!new:ser_adv_brain.attacks.PGD {eps: 0.3, steps: 3, eta: null, label_source: target}, "
    "!new:ser_adv_brain.attacks.WaveformPGD {eps: 20, steps: 2, label_source: target}, "
    "!new:ser_adv_brain.attacks.SquareAttack {eps: 0.3, max_queries: 20, eta: null, label_source: target}]",
    "--adaptive_attack=!new:ser_adv_brain.attacks.DetectorAwarePGD "
    "{eps: 0.3, steps: 3, eta: null, label_source: target}",
]


def test_roc_auc_on_a_hand_made_case_with_ties():
    negatives, positives = [0.1, 0.4, 0.4, 0.8], [0.4, 0.9, 0.35]
    # Pairs won by each positive: 0.4 beats 0.1 and ties twice (1 + 2 * 0.5), 0.9 beats all 4, 0.35 beats 0.1.
    assert roc_auc(negatives, positives) == pytest.approx(7 / 12)
    assert roc_auc([0.0, 1.0], [2.0, 3.0]) == 1.0 and roc_auc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert roc_auc([1.0, 1.0, 1.0], [1.0, 1.0]) == 0.5


def test_tpr_at_fpr_never_exceeds_the_rate_and_ties_at_the_threshold_are_not_flagged():
    negatives = torch.arange(20.0)  # 5% of 20: one negative (19) may score above the threshold
    assert detection_threshold(negatives, 0.05) == 18.0
    assert tpr_at_fpr(negatives, [18.0, 18.5, 19.0, 25.0], 0.05) == 0.75
    assert tpr_at_fpr(negatives, [18.0, 18.5, 19.0, 25.0], 0.0) == 0.25  # only 25 > 19


def tiny_guarded_model():
    torch.manual_seed(0)
    model = CNN4(base_channels=2)
    return DetectedClassifier(model, EmbeddingDetector(model.embedding_dim, hidden=4)).eval()


def test_detector_aware_pgd_is_its_formula():
    """One step from the clean input: ``x + eps * sign(grad_x [CE(f(x), y) - lambda * s(x)])``."""
    guarded, x, y, eps, weight = tiny_guarded_model(), torch.randn(3, 20, 8), torch.tensor([0, 3, 5]), 0.05, 2.0
    attack = DetectorAwarePGD(
        eps, detector_weight=weight, steps=1, rel_step_size=1.0, random_start=False, eta=None, label_source="target"
    )
    inputs = x.clone().requires_grad_(True)
    logits, detector_logit = guarded(inputs)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum") - weight * detector_logit.sum(), inputs)
    torch.testing.assert_close(attack.perturb(guarded, x, y), x + eps * grad.sign())


def test_detector_aware_pgd_without_the_detector_term_is_pgd():
    guarded, x, y = tiny_guarded_model(), torch.randn(3, 20, 8), torch.tensor([0, 3, 5])
    options = {"eps": 0.05, "steps": 3, "random_start": False, "eta": None, "label_source": "target"}
    adaptive = DetectorAwarePGD(detector_weight=0.0, **options).perturb(guarded, x, y)
    torch.testing.assert_close(adaptive, PGD(**options).perturb(guarded.model, x, y))
    with pytest.raises(TypeError, match="DetectedClassifier"):
        DetectorAwarePGD(eps=0.05).perturb(guarded.model, x, y)


@pytest.fixture(scope="module")
def detector_run(trained):
    """The detector command on the session's tiny trained run, as a user types it (output in tmp)."""
    out = str(trained["tmp"] / "detector")
    command = [
        sys.executable,
        "-m",
        "ser_adv_brain.train_detector",
        trained["out"],
        DETECTOR_YAML,
        *TINY_DETECTOR_FLAGS,
        f"--output_folder={out}",
    ]
    run_command(command)
    with open(os.path.join(out, "detection.csv"), newline="", encoding="utf-8") as f:
        rows = {row["attack"]: row for row in csv.DictReader(f)}
    return {"out": out, "rows": rows}


@pytest.mark.trained
def test_detector_separates_real_from_fgsm_and_the_adaptive_attack_evades_it(detector_run):
    rows = detector_run["rows"]
    assert list(rows) == ["FGSM", "PGD-3", "WaveformPGD-2", "SquareAttack", "DetectorAwarePGD-3 (adaptive)"]
    assert [row["seen_in_training"] for row in rows.values()] == ["True"] + ["False"] * 4
    fgsm, pgd, adaptive = rows["FGSM"], rows["PGD-3"], rows["DetectorAwarePGD-3 (adaptive)"]
    assert float(fgsm["AUC"]) >= 0.85 and float(fgsm["TPR_at_FPR"]) >= 0.4
    # Same budget and steps as PGD: knowing the detector, the attack is flagged less and handles the system worse.
    assert float(adaptive["AUC"]) < float(pgd["AUC"]) - 0.2
    assert float(adaptive["UAR_flagged_counted_correct"]) < float(pgd["UAR_flagged_counted_correct"])
    rows = markdown_rows(open(os.path.join(detector_run["out"], "detection.md"), encoding="utf-8").read())
    assert ["FGSM", "eps 0.3 (features linf)", "yes"] in [row[:3] for row in rows]


def test_interface_with_a_detector_adds_its_score_and_changes_nothing_else(trained, detector_run, tmp_path):
    plain = EmotionRecognizer.from_hparams(
        source=os.path.join(trained["out"], "interface"), savedir=str(tmp_path / "p")
    )
    guarded = EmotionRecognizer.from_hparams(
        source=os.path.join(detector_run["out"], "interface"), savedir=str(tmp_path / "g")
    )
    assert "detector" not in plain.mods and not hasattr(plain.hparams, "detector_threshold")
    assert "Fake-data detector" in open(os.path.join(detector_run["out"], "interface", "README.md")).read()
    threshold = guarded.hparams.detector_threshold
    assert 0.0 < threshold < 1.0
    wavs = plain.load_audio(trained["wavs"][0])
    before, after = plain.classify_batch(wavs), guarded.classify_batch(wavs)
    assert len(before) == 4 and len(after) == 5
    for old, new in zip(before, after):
        assert torch.equal(old, new) if torch.is_tensor(old) else old == new
    # The score is sigmoid(s(v)) of the exported detector on the model's embedding.
    detector = EmbeddingDetector(guarded.mods.model.embedding_dim, hidden=64)
    detector.load_state_dict(torch.load(os.path.join(detector_run["out"], "interface", "detector.ckpt")))
    with torch.no_grad():
        _, embedding = plain.mods.model(plain.compute_features(plain.prepare_batch(wavs)))
        torch.testing.assert_close(after[4], torch.sigmoid(detector.eval()(embedding)))
    assert len(guarded.attack_batch(wavs, eps=0.05)) == 6 and len(plain.attack_batch(wavs, eps=0.05)) == 5


def test_errors_name_the_folder_and_the_yaml_key(trained, tmp_path):
    with pytest.raises(SystemExit, match="is not a training output folder"):
        main([str(tmp_path), DETECTOR_YAML])
    with pytest.raises(SystemExit, match="nowhere.yaml: no such detector yaml"):
        main([trained["out"], str(tmp_path / "nowhere.yaml")])
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    for name in ("train.csv", "valid.csv", "test.csv"):
        shutil.copy(os.path.join(trained["out"], name), untrained / name)
    saved = open(os.path.join(trained["out"], "hyperparams.yaml"), encoding="utf-8").read()
    (untrained / "hyperparams.yaml").write_text(saved.replace(trained["out"], str(untrained)))  # its paths resolved
    with pytest.raises(SystemExit, match="has no checkpoint"):
        main([str(untrained), DETECTOR_YAML, "--noprogressbar"])
    with pytest.raises(SystemExit, match="detector.yaml: Override 'detectr_hidden' not found"):
        main([trained["out"], DETECTOR_YAML, "--detectr_hidden=8", "--noprogressbar"])
    broken = tmp_path / "broken.yaml"
    broken.write_text(open(DETECTOR_YAML).read().replace("adaptive_attack:", "adaptive_atack:"))
    with pytest.raises(KeyError, match="broken.yaml has no 'adaptive_attack'"):
        load_detector_hparams(str(broken), detector_overrides(str(tmp_path), embedding_dim=8))
