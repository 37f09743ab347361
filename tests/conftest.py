"""Shared fixtures: a tiny synthetic DEMoS-shaped corpus, its manifests, and yaml loading.

Everything is generated once per session in a temporary folder, so the suite
runs offline and never needs real data.
"""

import os
import re
import sys

import pytest
import soundfile
import torch
import torchaudio.functional
from hyperpyyaml import load_hyperpyyaml, resolve_references

from ser_adv_brain.synthetic import generate_synthetic_demos

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS_DIR = os.path.join(REPO_ROOT, "hparams")
DEMOS_RECIPE_DIR = os.path.join(REPO_ROOT, "recipes", "DEMoS")

# Overrides that shrink any of the nine yaml files to a seconds-long run
# (the adversarial ones also skip the warm-up).
TINY = {"base_channels": 2, "n_frames": 32, "batch_size": 4, "number_of_epochs": 1}


# Test tensors are tiny: extra threads only add synchronisation, and the cores are shared.
torch.set_num_threads(1)


# The smallest runs that clearly learn (dev UAR about 0.55 to 0.6 where chance is 1/7, in about 10 s of
# CPU): 6 speakers (2 per split), 3 clips per emotion, 12 epochs at a higher learning rate. Their dev UAR
# goes up and down, so the best-dev epoch is not the last one.
LEARNING_CORPUS = {"n_speakers": 6, "utterances_per_emotion": 3, "neutral_per_speaker": 0,
                   "min_duration": 0.8, "max_duration": 1.2, "seed": 1}
LEARNING_FLAGS = ["--base_channels=4", "--n_frames=64", "--batch_size=8", "--number_of_epochs=12", "--lr=0.005",
                  "--noprogressbar"]


def valid_uars(train_log):
    """Dev UAR of each epoch, from a ``train_log.txt`` text."""
    return [float(m) for m in re.findall(r"^epoch: \d+,.* valid UAR: ([0-9.e+-]+)", train_log, re.M)]


def tiny_overrides(name):
    """``TINY``, plus no warm-up for the adversarial yaml files (the single ones have no such key)."""
    return {**TINY, **({} if name.endswith("_single") else {"warmup_steps": 0})}


@pytest.fixture(scope="session")
def repo_root():
    """The checkout under test: recipes and hparams are run from here."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def demos_prepare():
    """The DEMoS recipe's preparation module, imported as ``train.py`` imports it."""
    if DEMOS_RECIPE_DIR not in sys.path:
        sys.path.insert(0, DEMOS_RECIPE_DIR)
    import demos_prepare

    return demos_prepare


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """6 speakers (3 f, 3 m), 2 utterances per emotion, 1 neutral each: 90 short clips."""
    folder = tmp_path_factory.mktemp("corpus") / "demos"
    return generate_synthetic_demos(
        str(folder),
        n_speakers=6,
        utterances_per_emotion=2,
        neutral_per_speaker=1,
        min_duration=0.6,
        max_duration=1.0,
        seed=7,
    )


@pytest.fixture(scope="session")
def tiny_manifests(tiny_corpus, demos_prepare, tmp_path_factory):
    """``{train,valid,test}.csv`` of the tiny corpus (2 speakers per split)."""
    folder = str(tmp_path_factory.mktemp("manifests"))
    demos_prepare.prepare_demos(tiny_corpus, folder)
    return {split: os.path.join(folder, f"{split}.csv") for split in ("train", "valid", "test")}


def load_hparams(name, **overrides):
    """Loads ``hparams/<name>.yaml`` with overrides and makes its output folder, as ``train.py`` does."""
    path = os.path.join(HPARAMS_DIR, f"{name}.yaml")
    with open(path, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    save_hyperparams(path, hparams["output_folder"], overrides)
    return hparams


def save_hyperparams(path, output_folder, overrides):
    """Writes ``<output_folder>/hyperparams.yaml`` as ``create_experiment_directory`` does
    (the export reads it), without reconfiguring logging under pytest's capture."""
    os.makedirs(output_folder, exist_ok=True)
    with open(path, encoding="utf-8") as f:
        resolved = resolve_references(f, overrides)
    with open(os.path.join(output_folder, "hyperparams.yaml"), "w", encoding="utf-8") as w:
        w.write(resolved.getvalue())


@pytest.fixture
def yaml_hparams(tmp_path):
    """Returns ``load(name, **overrides)``: a yaml file as users run it, output in tmp_path."""
    return lambda name, **overrides: load_hparams(name, output_folder=str(tmp_path / name), **overrides)


@pytest.fixture
def tiny_hparams(tiny_manifests, tmp_path):
    """Returns ``make(name, **overrides)``: a tiny yaml config on the tiny manifests, output in tmp_path."""

    def make(name, **overrides):
        return load_hparams(
            name,
            **{
                **tiny_overrides(name),
                "output_folder": str(tmp_path / name),
                "train_annotation": tiny_manifests["train"],
                "valid_annotation": tiny_manifests["valid"],
                "test_annotation": tiny_manifests["test"],
                **overrides,
            },
        )

    return make


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny vanilla run that learns (and exports its interface), and the files to classify
    (shared by the interface and evaluate_robustness tests)."""
    import helpers_iface  # not its names: its autouse fixture stays in the modules that import it

    hparams_file = "hparams/cnn4_vanilla.yaml"
    tmp = tmp_path_factory.mktemp("inference")
    corpus = generate_synthetic_demos(str(tmp / "corpus"), **LEARNING_CORPUS)
    out = str(tmp / "run")
    flags = [*LEARNING_FLAGS, "--warmup_steps=6", "--eval_eps=[0.0, 0.1]", f"--data_folder={corpus}",
             f"--output_folder={out}"]
    helpers_iface.run_recipe(hparams_file, *flags)
    brain, datasets, hparams = helpers_iface.evaluation_brain(hparams_file, *flags)
    test_wavs = sorted(datasets["test"].data[i]["wav"] for i in datasets["test"].data_ids)
    long_wav = max(test_wavs, key=lambda wav: soundfile.info(wav).frames)  # cropped to n_frames
    # 1 s of a test clip, stereo at 22.05 kHz: resampled, down-mixed and tiled to n_frames.
    audio, rate = soundfile.read(test_wavs[0], dtype="float32")
    short = torchaudio.functional.resample(torch.from_numpy(audio[:rate]), rate, 22050)
    stereo_wav = str(tmp / "stereo_22050.wav")
    soundfile.write(stereo_wav, torch.stack([short, 0.5 * short], dim=1).numpy(), 22050)
    return {"out": out, "brain": brain, "hparams": hparams, "wavs": [long_wav, stereo_wav], "tmp": tmp}


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory):
    """A tiny vanilla run of the DEMoS recipe on its built-in synthetic corpus, as a user types it.

    Returns ``{"out": output folder, "hparams_file": ..., "flags": [...]}``; the run
    exports its interface, with its model card, into ``<out>/interface``.
    """
    import helpers_iface

    out = str(tmp_path_factory.mktemp("exported_run") / "run")
    hparams_file = "hparams/cnn4_vanilla.yaml"
    flags = [*helpers_iface.TINY_FLAGS, "--warmup_steps=1", helpers_iface.TINY_CORPUS_FLAG, f"--output_folder={out}"]
    helpers_iface.run_recipe(hparams_file, *flags)
    return {"out": out, "hparams_file": hparams_file, "flags": flags}
