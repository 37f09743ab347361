"""An evaluation's progress file (``evaluation.progress``): resumed by the evaluation that wrote it, set aside
for any other, with the log naming what differs."""

import logging
import pathlib

import pytest
from speechbrain.utils.checkpoints import Checkpoint

from ser_adv_brain.evaluation.progress import BatchProgress, evaluation_identity

CHECKPOINT = Checkpoint(pathlib.Path("/runs/a/save/CKPT+1"), {"unixtime": 1733500000.25}, {})


def identity(checkpoint=CHECKPOINT, version="f0a769e", eps=0.02):
    return evaluation_identity(checkpoint, ["u2", "u1"], version, plan=[("features_linf", eps, ["APGD"])])


@pytest.fixture
def written(tmp_path):
    path = str(tmp_path / "suite_progress_test.json")
    BatchProgress(path, identity()).record(["u1", "u2"], {"clean": [3, 1]})
    return path


def test_the_same_evaluation_resumes_after_its_identity_is_read_back(written):
    assert BatchProgress(written, identity()).done(["u1", "u2"]) == {"ids": ["u1", "u2"], "clean": [3, 1]}


@pytest.mark.parametrize(
    "changed, named",
    [
        ({"version": "4393d0b"}, "code_version (f0a769e, now 4393d0b)"),
        ({"checkpoint": CHECKPOINT._replace(meta={"unixtime": 1733500999.0})}, "checkpoint"),
        ({"eps": 0.04}, "evaluated"),
    ],
)
def test_another_evaluations_file_is_set_aside_and_the_log_names_what_differs(written, caplog, changed, named):
    with caplog.at_level(logging.WARNING):
        progress = BatchProgress(written, identity(**changed))
    assert progress.done(["u1", "u2"]) is None and pathlib.Path(f"{written}.other").is_file()
    assert f"it differs in {named})" in caplog.text
