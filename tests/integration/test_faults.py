"""Faults lose nothing: killed runs resume exactly, NaN stops the run, and every file a run's checkpoints
hold loads with ``weights_only=True`` (the checkpointer's own failures: ``tests/unit/test_checkpoints.py``).
"""

import signal

import helpers
import numpy as np
import pytest
import soundfile
import torch

from ser_adv_brain.data.dataio import dataio_prep, manifests_of
from ser_adv_brain.training.brain import build_brain
from ser_adv_brain.training.checkpoints import STAGING_PREFIX


def test_sigkilled_run_resumes_to_the_same_results(reference_run, resume_corpus, tmp_path):
    """Killed while writing a checkpoint, then right after one, mid-epoch: resumed, it ends as if never killed."""
    output = tmp_path / "run"
    # 4 steps an epoch, a checkpoint after each: killed writing the 3rd (epoch 1), then, resumed from
    # the 2nd, killed just after its own 4th (epoch 2, past the 3-step warm-up, loss parts under way).
    killed = helpers.run_training(output, resume_corpus, kill="during:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list((output / "save").glob(STAGING_PREFIX + "*")), "the kill should have cut a save short"
    killed = helpers.run_training(output, resume_corpus, kill="after:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "brain_intra_epoch_ckpt" in helpers.checkpoints(output / "save")[-1].joinpath("CKPT.yaml").read_text()
    resumed = helpers.run_training(output, resume_corpus)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((output / "save").glob(STAGING_PREFIX + "*"))
    reference = helpers.run_outcome(reference_run)
    assert "epoch: 3" in reference["train_log"] and "real_loss" in reference["train_log"]  # it trained, adversarially
    helpers.assert_same_outcome(reference, helpers.run_outcome(output))


def test_killed_during_the_end_of_epoch_save_resumes_exactly(reference_run, resume_corpus, tmp_path):
    """Killed while the end-of-epoch checkpoint of epoch 2 is written: resumed, the run ends as if never killed."""
    output = tmp_path / "run"
    killed = helpers.run_training(output, resume_corpus, kill="epoch_save:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list((output / "save").glob(STAGING_PREFIX + "*")), "the kill should have cut a save short"
    resumed = helpers.run_training(output, resume_corpus)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((output / "save").glob(STAGING_PREFIX + "*"))
    helpers.assert_same_outcome(helpers.run_outcome(reference_run), helpers.run_outcome(output))


def test_killed_during_validation_resumes_exactly(reference_run, resume_corpus, tmp_path):
    """Killed while epoch 2 is validated (its training done, its last step checkpointed): resumed, the
    run validates epoch 2 again and ends as if never killed."""
    output = tmp_path / "run"
    killed = helpers.run_training(output, resume_corpus, kill="valid:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "epoch: 1," in (output / "train_log.txt").read_text()
    assert "epoch: 2," not in (output / "train_log.txt").read_text()
    resumed = helpers.run_training(output, resume_corpus)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    helpers.assert_same_outcome(helpers.run_outcome(reference_run), helpers.run_outcome(output))


def test_killed_during_the_export_reexports_the_same_interface(reference_run, resume_corpus, tmp_path):
    """Killed after training, while the interface is written: a rerun trains no further and exports
    the same files, with the same robustness table."""
    output = tmp_path / "run"
    killed = helpers.run_training(output, resume_corpus, kill="export:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (output / "interface" / "model.ckpt").exists() and not (output / "interface" / "hyperparams.yaml").exists()
    rerun = helpers.run_training(output, resume_corpus)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reference, outcome = helpers.run_outcome(reference_run), helpers.run_outcome(output)
    assert outcome["robustness"] == reference["robustness"]
    epochs = [line for line in outcome["train_log"].splitlines() if line.startswith("epoch: ")]
    assert epochs == [line for line in reference["train_log"].splitlines() if line.startswith("epoch: ")]
    for name in sorted(path.name for path in (reference_run / "interface").iterdir()):
        exported = (output / "interface" / name).read_bytes().replace(bytes(output), bytes(reference_run))
        assert exported == (reference_run / "interface" / name).read_bytes(), name


def test_nonfinite_loss_stops_naming_the_batch(tmp_path, resume_corpus):
    hparams = helpers.prepared_hparams(
        "cnn4_vanilla", resume_corpus, **helpers.resume_sizes("cnn4_vanilla"), output_folder=tmp_path / "run"
    )
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, {"noprogressbar": True, **helpers.EVERY_STEP}, helpers.RecipeBrain)
    # A file turns bad after the pre-training checks: the loss goes NaN at the last (4th) batch.
    last_id = datasets["train"].data_ids[-1]
    nan_wav = tmp_path / "nan.wav"
    samples = np.ones(8000, np.float32)
    samples[::100] = np.nan  # wherever the random crop falls
    soundfile.write(nan_wav, samples, 16000, subtype="FLOAT")
    datasets["train"].data[last_id]["wav"] = str(nan_wav)
    with pytest.raises(FloatingPointError, match=rf"step 4, on the batch of utterances \[.*'{last_id}'.*\]"):
        brain.fit(
            brain.hparams.epoch_counter,
            datasets["train"],
            datasets["valid"],
            train_loader_kwargs={"batch_size": 4, "shuffle": False},
        )
    # The NaN reached no parameter, and the last checkpoint holds the parameters after step 3.
    latest = helpers.checkpoints(hparams["save_folder"])[-1]
    saved = torch.load(latest / "model.ckpt", weights_only=True)
    assert "step: 3" in (latest / "brain.ckpt").read_text()
    for name, parameter in brain.modules.model.named_parameters():
        assert torch.isfinite(parameter).all() and torch.equal(saved[name], parameter.detach())


def test_every_checkpoint_file_loads_weights_only(reference_run):
    """Tensors and plain values only: loading them cannot run code."""
    files = [f for f in (reference_run / "save").glob("CKPT+*/*.ckpt") if f.read_bytes()[:2] == b"PK"]
    assert {f.stem for f in files} >= {"model", "normalizer", "optimizer", "random_state", "loss_parts"}
    for path in files:
        torch.load(path, weights_only=True)
