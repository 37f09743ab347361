"""Paths that yaml files and exported interfaces written before the package's layers name keep working
(``docs/architecture.md``, "Compatibility paths"): models and recipes shared before the move must not break."""

import importlib

import pytest
from hyperpyyaml import load_hyperpyyaml

# Old path -> where the object lives now.
MOVED = {
    "ser_adv_brain.checkpoints.AtomicCheckpointer": "ser_adv_brain.training.checkpoints.AtomicCheckpointer",
    "ser_adv_brain.checkpoints.RandomState": "ser_adv_brain.training.checkpoints.RandomState",
    "ser_adv_brain.checkpoints.GeneratorStates": "ser_adv_brain.training.checkpoints.GeneratorStates",
    "ser_adv_brain.feature_noise.GaussianFeatureNoise": "ser_adv_brain.features.GaussianFeatureNoise",
    # An exported folder's custom_interface.py, as written before the move.
    "ser_adv_brain.inference.EmotionRecognizer": "ser_adv_brain.interface.EmotionRecognizer",
}


def resolve(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("old, new", MOVED.items())
def test_an_old_path_names_the_object_of_its_new_home(old, new):
    assert resolve(old) is resolve(new)


def test_a_yaml_written_before_the_layers_builds_the_same_plug_ins(tmp_path):
    hparams = load_hyperpyyaml(
        f"""
feature_noise: !new:ser_adv_brain.feature_noise.GaussianFeatureNoise
    std: 0.02
checkpointer: !new:ser_adv_brain.checkpoints.AtomicCheckpointer
    checkpoints_dir: {tmp_path}
    recoverables:
        random_state: !new:ser_adv_brain.checkpoints.RandomState
"""
    )
    assert type(hparams["feature_noise"]) is resolve(MOVED["ser_adv_brain.feature_noise.GaussianFeatureNoise"])
    assert hparams["feature_noise"].std == 0.02
    checkpointer = hparams["checkpointer"]
    assert type(checkpointer) is resolve(MOVED["ser_adv_brain.checkpoints.AtomicCheckpointer"])
    assert type(checkpointer.recoverables["random_state"]) is resolve(MOVED["ser_adv_brain.checkpoints.RandomState"])
