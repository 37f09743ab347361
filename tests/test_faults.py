"""Faults lose nothing: killed runs resume exactly, failed saves keep the last good checkpoint, NaN stops the run.

Also the safety of checkpoint loading: everything loads with ``weights_only=True``.
"""

import errno
import signal

import numpy as np
import pytest
import soundfile
import torch

import helpers_reliability as helpers
from helpers_reliability import EVERY_STEP, reference_run, shared_corpus  # noqa: F401 (fixtures)
from ser_adv_brain.checkpoints import STAGING_PREFIX, AtomicCheckpointer, RandomState
from ser_adv_brain.dataio import dataio_prep, manifests_of
from ser_adv_brain.metrics import RunningMeans
from ser_adv_brain.recipe import build_brain
from helpers_iface import RecipeBrain


def test_sigkilled_run_resumes_to_the_same_results(reference_run, shared_corpus, tmp_path):  # noqa: F811
    """Killed while writing a checkpoint, then right after one, mid-epoch: resumed, it ends as if never killed."""
    output = tmp_path / "run"
    # 4 steps an epoch, a checkpoint after each: killed writing the 3rd (epoch 1), then, resumed from
    # the 2nd, killed just after its own 4th (epoch 2, past the 3-step warm-up, loss parts under way).
    killed = helpers.run_training(output, shared_corpus, kill="during:3", **EVERY_STEP)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list((output / "save").glob(STAGING_PREFIX + "*")), "the kill should have cut a save short"
    killed = helpers.run_training(output, shared_corpus, kill="after:4", **EVERY_STEP)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "brain_intra_epoch_ckpt" in helpers.checkpoints(output / "save")[-1].joinpath("CKPT.yaml").read_text()
    resumed = helpers.run_training(output, shared_corpus, **EVERY_STEP)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((output / "save").glob(STAGING_PREFIX + "*"))
    helpers.assert_same_outcome(helpers.run_outcome(reference_run), helpers.run_outcome(output))


def test_killed_during_the_end_of_epoch_save_resumes_exactly(reference_run, shared_corpus, tmp_path):  # noqa: F811
    """Killed while the end-of-epoch checkpoint of epoch 2 is written: resumed, the run ends as if never killed."""
    output = tmp_path / "run"
    killed = helpers.run_training(output, shared_corpus, kill="epoch_save:2", **EVERY_STEP)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list((output / "save").glob(STAGING_PREFIX + "*")), "the kill should have cut a save short"
    resumed = helpers.run_training(output, shared_corpus, **EVERY_STEP)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((output / "save").glob(STAGING_PREFIX + "*"))
    helpers.assert_same_outcome(helpers.run_outcome(reference_run), helpers.run_outcome(output))


def test_killed_during_validation_resumes_exactly(reference_run, shared_corpus, tmp_path):  # noqa: F811
    """Killed while epoch 2 is validated (its training done, its last step checkpointed): resumed, the
    run validates epoch 2 again and ends as if never killed."""
    output = tmp_path / "run"
    killed = helpers.run_training(output, shared_corpus, kill="valid:2", **EVERY_STEP)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "epoch: 1," in (output / "train_log.txt").read_text()
    assert "epoch: 2," not in (output / "train_log.txt").read_text()
    resumed = helpers.run_training(output, shared_corpus, **EVERY_STEP)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    helpers.assert_same_outcome(helpers.run_outcome(reference_run), helpers.run_outcome(output))


def test_killed_during_the_export_reexports_the_same_interface(reference_run, shared_corpus, tmp_path):  # noqa: F811
    """Killed after training, while the interface is written: a rerun trains no further and exports
    the same files, with the same robustness table."""
    output = tmp_path / "run"
    killed = helpers.run_training(output, shared_corpus, kill="export:1", **EVERY_STEP)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (output / "interface" / "model.ckpt").exists() and not (output / "interface" / "hyperparams.yaml").exists()
    rerun = helpers.run_training(output, shared_corpus, **EVERY_STEP)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reference, outcome = helpers.run_outcome(reference_run), helpers.run_outcome(output)
    assert outcome["robustness"] == reference["robustness"]
    epochs = [line for line in outcome["train_log"].splitlines() if line.startswith("epoch: ")]
    assert epochs == [line for line in reference["train_log"].splitlines() if line.startswith("epoch: ")]
    for name in sorted(path.name for path in (reference_run / "interface").iterdir()):
        exported = (output / "interface" / name).read_bytes().replace(bytes(output), bytes(reference_run))
        assert exported == (reference_run / "interface" / name).read_bytes(), name


def small_checkpointer(folder):
    model = torch.nn.Linear(3, 2)
    return model, AtomicCheckpointer(folder, {"model": model, "random_state": RandomState()})


@pytest.mark.parametrize("failure", ["torch.save", "saver"])
def test_failed_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, failure):
    model, checkpointer = small_checkpointer(tmp_path)
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
    reloaded, reloader = small_checkpointer(tmp_path)
    reloader.recover_if_possible()
    for key, value in good.items():
        assert torch.equal(reloaded.state_dict()[key], value)


def test_interrupted_save_is_ignored_then_cleaned_up(tmp_path):
    _, checkpointer = small_checkpointer(tmp_path)
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


def test_nonfinite_loss_stops_naming_the_batch(tmp_path, shared_corpus):  # noqa: F811
    hparams = helpers.load_hparams(tmp_path / "run", shared_corpus)
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, {"noprogressbar": True, **EVERY_STEP}, RecipeBrain)
    # A file turns bad after the pre-training checks: the loss goes NaN at the last (4th) batch.
    last_id = datasets["train"].data_ids[-1]
    nan_wav = tmp_path / "nan.wav"
    samples = np.ones(8000, np.float32)
    samples[::100] = np.nan  # wherever the random crop falls
    soundfile.write(nan_wav, samples, 16000, subtype="FLOAT")
    datasets["train"].data[last_id]["wav"] = str(nan_wav)
    with pytest.raises(FloatingPointError, match=rf"step 4, on the batch of utterances \[.*'{last_id}'.*\]"):
        brain.fit(brain.hparams.epoch_counter, datasets["train"], datasets["valid"],
                  train_loader_kwargs={"batch_size": 4, "shuffle": False})
    # The NaN reached no parameter, and the last checkpoint holds the parameters after step 3.
    latest = helpers.checkpoints(hparams["save_folder"])[-1]
    saved = torch.load(latest / "model.ckpt", weights_only=True)
    assert "step: 3" in (latest / "brain.ckpt").read_text()
    for name, parameter in brain.modules.model.named_parameters():
        assert torch.isfinite(parameter).all() and torch.equal(saved[name], parameter.detach())


def test_every_checkpoint_file_loads_weights_only(reference_run):  # noqa: F811
    """Tensors and plain values only: loading them cannot run code."""
    files = [f for f in (reference_run / "save").glob("CKPT+*/*.ckpt") if f.read_bytes()[:2] == b"PK"]
    assert {f.stem for f in files} >= {"model", "normalizer", "optimizer", "random_state", "loss_parts"}
    for path in files:
        torch.load(path, weights_only=True)


class CodeOnLoad:
    """Unpickling it creates a file: a stand-in for arbitrary code in a tampered checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["model", "random_state"])
def test_tampered_checkpoint_is_refused_not_executed(tmp_path, name):
    _, checkpointer = small_checkpointer(tmp_path / "save")
    checkpoint = checkpointer.save_checkpoint()
    marker = tmp_path / "code_ran"
    torch.save({"weight": CodeOnLoad(str(marker))}, checkpoint.paramfiles[name])
    with pytest.raises(Exception, match="Weights only load failed"):
        small_checkpointer(tmp_path / "save")[1].recover_if_possible()
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
