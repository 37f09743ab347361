"""Shared fixtures: the tiny synthetic corpora, their manifests, yaml loading, and the shared recipe runs.

Everything is generated once per session in a temporary folder, so the suite
runs offline and never needs real data. The constants and plain functions they
use are in ``helpers.py``.
"""

import os
import sys

import pytest
import soundfile
import torch
import torchaudio.functional
from helpers import (
    LEARNING,
    LEARNING_CORPUS,
    REPO_ROOT,
    RESUME_CORPUS,
    TINY_CORPUS,
    completed_run,
    corpus_flag,
    evaluation_brain,
    flags,
    prepared_hparams,
    run_recipe,
    tiny,
)

from ser_adv_brain.data.synthetic import generate_synthetic_demos

# Test tensors are tiny: extra threads only add synchronisation, and the cores are shared.
torch.set_num_threads(1)
# The DEMoS recipe's preparation module, importable as ``train.py`` imports it.
sys.path.insert(0, str(REPO_ROOT / "recipes" / "DEMoS"))


def make_lazy_modules_inspectable():
    """Lets hypothesis's pytest plugin collect tests in a process that imported SpeechBrain.

    SpeechBrain puts lazy modules in ``sys.modules`` whose attribute access
    raises ``ImportError`` when an optional dependency (k2) is missing; the
    plugin reads every module's ``__file__`` while collecting, and crashes.
    An explicit ``__file__ = None`` on the unloaded ones keeps it out of
    their way.
    """
    from speechbrain.utils.importutils import LazyModule

    for module in list(sys.modules.values()):
        if isinstance(module, LazyModule) and module.lazy_module is None:
            module.__file__ = None


make_lazy_modules_inspectable()


@pytest.fixture(scope="session")
def demos_prepare():
    """The DEMoS recipe's preparation module."""
    import demos_prepare

    return demos_prepare


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """``TINY_CORPUS``: 90 short clips."""
    return generate_synthetic_demos(str(tmp_path_factory.mktemp("corpus") / "demos"), **TINY_CORPUS)


@pytest.fixture(scope="session")
def tiny_manifests(tiny_corpus, demos_prepare, tmp_path_factory):
    """``{train,valid,test}.csv`` of the tiny corpus (2 speakers per split)."""
    folder = str(tmp_path_factory.mktemp("manifests"))
    demos_prepare.prepare_demos(tiny_corpus, folder)
    return {split: os.path.join(folder, f"{split}.csv") for split in ("train", "valid", "test")}


@pytest.fixture
def yaml_hparams(tmp_path):
    """Returns ``load(name, **overrides)``: a yaml file as users run it, output in tmp_path."""
    return lambda name, **overrides: prepared_hparams(name, output_folder=str(tmp_path / name), **overrides)


@pytest.fixture
def tiny_hparams(tiny_manifests, tmp_path):
    """Returns ``make(name, **overrides)``: a yaml file at ``TINY`` size on the tiny manifests, output in tmp_path."""

    def make(name, **overrides):
        return prepared_hparams(
            name,
            **{
                **tiny(name),
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
    """A ``LEARNING``-sized vanilla run of the DEMoS recipe on its built-in synthetic corpus, as a user
    types it: it learns, and exports its interface with its model card into ``<out>/interface``.

    Shared by the interface, model card, evaluation-command and recipe-output tests. Returns the
    output folder, the command (``hparams_file``, ``flags``) and its console ``output``, a Brain over
    the finished run with its ``hparams``, and ``wavs`` to classify: the longest test clip (cropped
    to n_frames) and 1 s of a test clip as stereo at 22.05 kHz (resampled, down-mixed, tiled).
    """
    hparams_file = "hparams/cnn4_vanilla.yaml"
    tmp = tmp_path_factory.mktemp("trained")
    out = str(tmp / "run")
    # A warm-up of half the training; eps up to the yaml's eta, so nothing is clipped.
    run_flags = [
        *flags(**LEARNING, warmup_steps=6),
        "--eval_eps=[0.0, 0.1]",
        corpus_flag(LEARNING_CORPUS),
        f"--output_folder={out}",
        "--noprogressbar",
    ]
    output = run_recipe(hparams_file, *run_flags)
    brain, datasets, hparams = evaluation_brain(hparams_file, *run_flags)
    test_wavs = sorted(datasets["test"].data[i]["wav"] for i in datasets["test"].data_ids)
    long_wav = max(test_wavs, key=lambda wav: soundfile.info(wav).frames)
    audio, rate = soundfile.read(test_wavs[0], dtype="float32")
    short = torchaudio.functional.resample(torch.from_numpy(audio[:rate]), rate, 22050)
    stereo_wav = str(tmp / "stereo_22050.wav")
    soundfile.write(stereo_wav, torch.stack([short, 0.5 * short], dim=1).numpy(), 22050)
    return {
        "out": out,
        "hparams_file": hparams_file,
        "flags": run_flags,
        "output": output,
        "brain": brain,
        "hparams": hparams,
        "wavs": [long_wav, stereo_wav],
        "tmp": tmp,
    }


@pytest.fixture(scope="session")
def resume_corpus(tmp_path_factory):
    """``RESUME_CORPUS``, made once per session."""
    return generate_synthetic_demos(str(tmp_path_factory.mktemp("resume_corpus")), **RESUME_CORPUS)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, resume_corpus):
    """An uninterrupted ``RESUME``-sized vanilla run, run once per session: what killed and resumed runs must equal."""
    return completed_run(tmp_path_factory.mktemp("reference") / "run", resume_corpus)
