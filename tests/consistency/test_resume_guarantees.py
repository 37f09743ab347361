"""Every shipped yaml file carries the checkpointer whose exact resume the integration tests verify.

``tests/integration/test_faults.py`` kills and resumes the DEMoS ``cnn4_vanilla.yaml`` run at every
point of a step, and ``test_reproducibility.py`` a few other recipes and kinds; the other yaml files
share their code paths, so what can still differ is what each file declares: the checkpointer and
what it saves. Checked here for all of them, in seconds.
"""

import pytest
from helpers import RECIPE_HPARAMS_FILES, load_hparams, takes_waveform_file, tiny

from ser_adv_brain.training.checkpoints import AtomicCheckpointer, RandomState

RESUMED = "hparams/cnn4_vanilla.yaml"  # the one test_faults.py kills and resumes


def recoverables(hparams_file, folder):
    """The checkpointer's recoverables, by name: the model as the yaml's own model, the rest by type."""
    hparams = load_hparams(hparams_file, **tiny(hparams_file), data_folder=str(folder), output_folder=str(folder))
    checkpointer = hparams["checkpointer"]
    assert isinstance(checkpointer, AtomicCheckpointer), (
        f"{hparams_file}: checkpointer is {type(checkpointer).__name__}"
    )
    assert checkpointer.recoverables["model"] is hparams["model"]
    return {name: "model" if obj is hparams["model"] else type(obj) for name, obj in checkpointer.recoverables.items()}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    expected = recoverables(RESUMED, tmp_path_factory.mktemp("resumed"))
    assert expected["random_state"] is RandomState
    return expected


@pytest.mark.parametrize("hparams_file", [f for f in RECIPE_HPARAMS_FILES if f != RESUMED])
def test_every_yaml_saves_what_the_resumed_one_saves(hparams_file, resumed, tmp_path):
    # A model that takes the waveform has no feature normaliser to save.
    expected = {k: v for k, v in resumed.items() if not (k == "normalizer" and takes_waveform_file(hparams_file))}
    assert recoverables(hparams_file, tmp_path) == expected
