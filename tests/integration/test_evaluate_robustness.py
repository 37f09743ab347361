"""``ser-adv evaluate`` (and its old name, ``python -m ser_adv_brain.evaluate_robustness``): the robustness
report of a finished run (conftest's ``trained``, a tiny vanilla run that learns), redone with other settings.
Where ``--output_folder`` puts the reports: ``tests/integration/test_commands.py``."""

import csv
import os
import shutil
import sys

import pytest
from helpers import run_command, valid_uars

from ser_adv_brain import targeted_success, transfer


def report(folder):
    with open(os.path.join(folder, "robustness.csv"), newline="", encoding="utf-8") as f:
        return {(r["split"], float(r["eps"])): float(r["UAR"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def copied_run(trained, tmp_path_factory):
    """A copy of the finished run, so that the command's rewrites leave the shared one alone."""
    folder = tmp_path_factory.mktemp("evaluate") / "run"
    shutil.copytree(trained["out"], folder)
    return str(folder)


def evaluate(folder, *flags):
    run_command([sys.executable, "-m", "ser_adv_brain.evaluate_robustness", folder, *flags, "--noprogressbar"])
    return report(folder)


def test_it_redoes_the_recipes_report_and_clips_to_eta(trained, copied_run):
    """The same checkpoint (best dev) gives the training run's rows; above eta = 0.1 the rows repeat."""
    rows = evaluate(copied_run, "--eval_eps=[0.0, 0.1, 0.2]")
    assert list(rows) == [(s, e) for s in ("valid", "test") for e in (0.0, 0.1, 0.2)]
    original = report(trained["out"])
    for split in ("valid", "test"):
        assert rows[(split, 0.0)] == original[(split, 0.0)] and rows[(split, 0.1)] == original[(split, 0.1)]
        assert rows[(split, 0.2)] == rows[(split, 0.1)]


def test_it_attacks_the_checkpoint_select_checkpoint_names(copied_run):
    """``final``: the last epoch's model, whose dev UAR the training log gives. (Whether it is another than
    the best depends on the host's floats; ``tests/unit/test_brain.py`` tells them apart on scripted UARs.)"""
    rows = evaluate(copied_run, "--select_checkpoint=final", "--eval_eps=[0.0]")
    uars = valid_uars(open(os.path.join(copied_run, "train_log.txt"), encoding="utf-8").read())
    assert rows[("valid", 0.0)] == pytest.approx(uars[-1], abs=5e-3)


def test_a_folder_without_a_run_is_named(tmp_path):
    with pytest.raises(AssertionError, match=f"{str(tmp_path)!r} is not a training output folder"):
        run_command([sys.executable, "-m", "ser_adv_brain.evaluate_robustness", str(tmp_path)])


@pytest.mark.parametrize("command, folders", [(transfer.main, 2), (targeted_success.main, 1)])
def test_the_other_commands_name_a_folder_without_a_run_too(tmp_path, command, folders):
    """A one-line message, as evaluate_robustness gives, not a traceback."""
    with pytest.raises(SystemExit, match=f"{str(tmp_path)!r} is not a training output folder"):
        command([str(tmp_path)] * folders)
