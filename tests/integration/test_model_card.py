"""The exported interface is a hub model repository: a model card with the run's own results, loadable from anywhere."""

import csv
import os
import shutil
import socket

import pytest
import torch
import yaml
from helpers import LEARNING_CORPUS, load_hparams
from huggingface_hub import ModelCard
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.interfaces import foreign_class

from ser_adv_brain.attacks import PGD
from ser_adv_brain.features import GaussianFeatureNoise
from ser_adv_brain.interface import EmotionRecognizer
from ser_adv_brain.objectives import VanillaAdversarialObjective
from ser_adv_brain.reports.model_card import model_card
from ser_adv_brain.training_steps import CleanStep, FeatureNoiseStep, adversarial_step


def metadata_and_body(card):
    """The card's YAML front matter, parsed, and the markdown after it."""
    assert card.startswith("---\n")
    block, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(block), body


@pytest.fixture(scope="module")
def card(trained):
    with open(os.path.join(trained["out"], "interface", "README.md"), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def run_hparams(trained):
    """The run's hyperparameters, as its recipe saw them, with its label encoder."""
    hparams = load_hparams(trained["hparams_file"], *trained["flags"])
    hparams["label_encoder"] = CategoricalEncoder()
    hparams["label_encoder"].load(os.path.join(hparams["save_folder"], "label_encoder.txt"))
    return hparams


def test_card_metadata_carries_the_runs_results(card, trained):
    meta, body = metadata_and_body(card)
    assert {"audio-classification", "speechbrain", "cnn4", "synthetic-data"} <= set(meta["tags"])
    assert "language" not in meta  # synthetic voices speak no language
    assert (meta["license"], meta["license_name"]) == ("other", "ser-adv-brain")
    assert meta["datasets"] == ["ser-adv-brain-synthetic"]
    assert meta["library_name"] == "speechbrain" and set(meta["metrics"]) == {"uar", "accuracy"}
    # Every row of the run's attack report is in the model-index, with its value.
    with open(os.path.join(trained["out"], "robustness.csv"), newline="", encoding="utf-8") as f:
        report = list(csv.DictReader(f))
    assert [entry["name"] for entry in meta["model-index"]] == ["cnn4_vanilla"]
    # As the Hugging Face hub reads it (its own parser fails on a malformed model-index).
    results = ModelCard(card).data.eval_results
    assert {(result.task_type, result.dataset_type) for result in results} == {
        ("audio-classification", "ser-adv-brain-synthetic")
    }
    indexed = {(res.dataset_split, res.metric_type, res.metric_name): res.metric_value for res in results}
    expected = {}
    for row in report:
        split = {"valid": "Dev", "test": "Test"}[row["split"]]
        data = "real data" if float(row["eps"]) == 0 else f"FGSM data, eps {float(row['eps']):g}"
        for metric, column in (("uar", "UAR"), ("accuracy", "accuracy")):
            name = f"{split} {'UAR' if metric == 'uar' else 'accuracy'}, {data}"
            expected[(row["split"], metric, name)] = round(float(row[column]), 4)
    assert indexed == expected and len(expected) == 8
    # The body quotes the report the run wrote, and says what the model was trained on.
    with open(os.path.join(trained["out"], "robustness.md"), encoding="utf-8") as f:
        assert f.read().strip() in body
    assert "SYNTHETIC speech" in body
    n = 2 * 7 * LEARNING_CORPUS["utterances_per_emotion"]  # 2 speakers a split, 7 emotions, no neutral
    assert f"train 2 ({n} utterances), dev 2 ({n} utterances), test 2 ({n} utterances)" in body
    assert "at eps 0, 0.1" in body and "`VanillaAdversarialObjective(alpha=0.5)`" in body


def test_card_describes_the_corpus_and_its_terms(run_hparams):
    expected = {
        "DEMoS": ("it", "demos-eula", "end-user license agreement (EULA)"),
        "EmoDB": ("de", "emodb-research", "free of charge for research"),
        "synthetic": (None, "ser-adv-brain", "no third-party recordings"),
        None: (None, "unknown", "fill in `language`, `datasets` and the license"),
    }
    for corpus, (language, license_name, terms) in expected.items():
        meta, body = metadata_and_body(model_card(run_hparams, corpus))
        assert (meta.get("language"), meta["license_name"]) == (language, license_name)
        assert terms in body.split("## License", 1)[1]


def test_a_copy_of_the_folder_loads_offline_through_foreign_class(trained, tmp_path, monkeypatch):
    original = os.path.join(trained["out"], "interface")
    copy = shutil.copytree(original, tmp_path / "hub_repo")
    for name in os.listdir(copy):  # nothing points back at the training run
        if name.endswith((".md", ".yaml", ".py")):
            assert trained["out"] not in (copy / name).read_text(encoding="utf-8")

    def no_network(*args, **kwargs):
        raise AssertionError("the interface tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    hidden = original + ".hidden"  # the original folder is out of reach while the copy loads
    os.rename(original, hidden)
    try:
        recognizer = foreign_class(
            source=str(copy),
            pymodule_file="custom_interface.py",
            classname="EmotionRecognizer",
            savedir=str(tmp_path / "pretrained"),
        )
    finally:
        os.rename(hidden, original)
    assert isinstance(recognizer, EmotionRecognizer)
    wav = torch.randn(1, 16000)
    reference = EmotionRecognizer.from_hparams(source=original, savedir=str(tmp_path / "reference"))
    torch.testing.assert_close(recognizer.classify_batch(wav)[0], reference.classify_batch(wav)[0])


def test_card_names_what_the_model_was_trained_on(run_hparams):
    """The training step's own attack or noise, not the report's FGSM (which makes the report only)."""
    objective = VanillaAdversarialObjective(0.5)
    pgd = PGD(eps=0.02, steps=3, label_source="target")
    steps = {
        "adversarially trained against PGD": adversarial_step(pgd, objective, 0),
        "trained on noisy copies (GaussianFeatureNoise), attacked with FGSM": FeatureNoiseStep(
            GaussianFeatureNoise(std=0.02), objective
        ),
        "clean training, attacked with FGSM": CleanStep(),
    }
    bodies = {
        headline: metadata_and_body(model_card({**run_hparams, "training_step": step}))[1]
        for headline, step in steps.items()
    }
    for headline, body in bodies.items():
        assert headline in body.splitlines()[1]
        if not isinstance(steps[headline], CleanStep):
            assert f"`{objective!r}`" in body
    assert f"against `{pgd!r}`" in bodies["adversarially trained against PGD"]
