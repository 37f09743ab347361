"""The atomic checkpointer seen from outside: names, meta data, replacement and what it logs."""

import logging

import torch
import yaml

from ser_adv_brain.checkpoints import STAGING_PREFIX, AtomicCheckpointer, RandomState


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
