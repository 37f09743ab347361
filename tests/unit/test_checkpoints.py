"""The atomic checkpointer seen from outside: names, meta data, replacement and what it logs; failed and
interrupted saves keep the last good checkpoint; tampered files are refused; random state and running
means resume mid-epoch."""

import errno
import logging

import numpy as np
import pytest
import torch
import yaml

from ser_adv_brain.metrics import RunningMeans
from ser_adv_brain.training.checkpoints import STAGING_PREFIX, AtomicCheckpointer, RandomState


def checkpointer_of(folder):
    model = torch.nn.Linear(3, 2)
    return model, AtomicCheckpointer(folder, {"model": model, "random_state": RandomState()})


def folder_names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_named_checkpoint_is_replaced_whole(tmp_path):
    model, checkpointer = checkpointer_of(tmp_path)
    first = checkpointer.save_checkpoint(name="export")
    assert first.path == tmp_path / "CKPT+export" and folder_names(tmp_path) == ["CKPT+export"]
    with torch.no_grad():
        model.weight.fill_(7.0)
    second = checkpointer.save_checkpoint(name="export", meta={"UAR": 0.5})
    assert second.path == first.path and folder_names(tmp_path) == ["CKPT+export"]  # no staging or old copy left
    assert torch.equal(torch.load(second.paramfiles["model"], weights_only=True)["weight"], model.weight)
    assert yaml.safe_load((second.path / "CKPT.yaml").read_text())["UAR"] == 0.5


def test_meta_data_records_the_kind_of_checkpoint(tmp_path):
    _, checkpointer = checkpointer_of(tmp_path)
    end = checkpointer.save_checkpoint(meta={"UAR": 0.25})
    intra = checkpointer.save_checkpoint(end_of_epoch=False)
    for checkpoint, end_of_epoch in ((end, True), (intra, False)):
        on_disk = yaml.safe_load((checkpoint.path / "CKPT.yaml").read_text())
        assert on_disk["end-of-epoch"] is end_of_epoch
        assert checkpoint.meta == on_disk
        assert set(checkpoint.paramfiles) == {"model", "random_state"}
        assert all(path.parent == checkpoint.path and path.is_file() for path in checkpoint.paramfiles.values())
    assert end.meta["UAR"] == 0.25


def test_log_names_the_final_folder_once(tmp_path, caplog):
    _, checkpointer = checkpointer_of(tmp_path)
    with caplog.at_level(logging.INFO):
        end = checkpointer.save_checkpoint()
        intra = checkpointer.save_checkpoint(end_of_epoch=False)
    infos = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert infos == [
        f"Saved an end-of-epoch checkpoint in {end.path}",
        f"Saved an intra-epoch checkpoint in {intra.path}",
    ]


def test_stale_staging_folder_is_named_when_removed(tmp_path, caplog):
    _, checkpointer = checkpointer_of(tmp_path)
    stale = tmp_path / f"{STAGING_PREFIX}CKPT+cut-short"
    stale.mkdir()
    (stale / "model.ckpt").write_bytes(b"half")
    with caplog.at_level(logging.WARNING):
        checkpointer.save_checkpoint()
    assert not stale.exists()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"Removing {stale}, a checkpoint whose saving was interrupted."
    ]


def test_leftovers_that_cannot_be_removed_do_not_stop_a_save(tmp_path):
    _, checkpointer = checkpointer_of(tmp_path)
    (tmp_path / f"{STAGING_PREFIX}notes.txt").write_text("a file, not a checkpoint folder")
    checkpoint = checkpointer.save_checkpoint()
    assert checkpoint.path.is_dir() and (checkpoint.path / "model.ckpt").is_file()


@pytest.mark.parametrize("failure", ["torch.save", "saver"])
def test_failed_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, failure):
    model, checkpointer = checkpointer_of(tmp_path)
    checkpointer.save_and_keep_only()
    good = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    if failure == "torch.save":  # the disk fills up while the parameters are written

        def full_disk(obj, path, *args, **kwargs):
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(torch, "save", full_disk)
    else:  # a recoverable, saved after the model, cannot write its file

        def no_permission(obj, path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        checkpointer.add_recoverable("extra", torch.nn.Linear(1, 1), custom_save_hook=no_permission)
    with pytest.raises(OSError):
        checkpointer.save_and_keep_only()
    monkeypatch.undo()
    assert len(checkpointer.list_checkpoints()) == 1
    assert not list(tmp_path.glob(STAGING_PREFIX + "*"))
    reloaded, reloader = checkpointer_of(tmp_path)
    reloader.recover_if_possible()
    for key, value in good.items():
        assert torch.equal(reloaded.state_dict()[key], value)


def test_interrupted_save_is_ignored_then_cleaned_up(tmp_path):
    _, checkpointer = checkpointer_of(tmp_path)
    good = checkpointer.save_checkpoint()
    # What a kill leaves: a staging folder with the meta file and part of the parameters.
    stale = tmp_path / f"{STAGING_PREFIX}CKPT+later"
    stale.mkdir()
    (stale / "CKPT.yaml").write_text("end-of-epoch: true\nunixtime: 9.9e9\n")
    (stale / "model.ckpt").write_bytes(b"trunc")
    assert checkpointer.find_checkpoint().path == good.path
    newer = checkpointer.save_checkpoint()
    assert newer.path.name.startswith("CKPT+") and newer.path.is_dir()
    assert not stale.exists()


class CodeOnLoad:
    """Unpickling it creates a file: a stand-in for arbitrary code in a tampered checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["model", "random_state"])
def test_tampered_checkpoint_is_refused_not_executed(tmp_path, name):
    _, checkpointer = checkpointer_of(tmp_path / "save")
    checkpoint = checkpointer.save_checkpoint()
    marker = tmp_path / "code_ran"
    torch.save({"weight": CodeOnLoad(str(marker))}, checkpoint.paramfiles[name])
    with pytest.raises(Exception, match="Weights only load failed"):
        checkpointer_of(tmp_path / "save")[1].recover_if_possible()
    assert not marker.exists()


def test_random_state_restores_every_generator(tmp_path):
    import random

    path = tmp_path / "rng.ckpt"
    RandomState().save(path)
    draws = (torch.rand(3), np.random.rand(3), random.random())
    RandomState().load(path, end_of_epoch=False)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


def test_running_means_resume_mid_epoch(tmp_path):
    means = RunningMeans()
    means.append({"real_loss": torch.tensor(1.0)})
    means.save(tmp_path / "m.ckpt")
    resumed = RunningMeans()
    resumed.load(tmp_path / "m.ckpt", end_of_epoch=False)
    resumed.append({"real_loss": 2.0})
    assert resumed.summarize() == {"real_loss": 1.5}
