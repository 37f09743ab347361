"""DDP through SpeechBrain's launcher on CPU: two gloo processes train as one and evaluate as one.

Each case starts ``torchrun --nproc_per_node=2 recipes/DEMoS/train.py ...
--distributed_backend=gloo`` through ``tests/ddp_probe.py``, which counts the
reducer's all-reduces and records every rank's state and metrics.
"""

import csv
import glob
import os
import sys

import pytest
import torch

from helpers_iface import (
    REPO,
    TINY_CORPUS_FLAG,
    TINY_FLAGS,
    capture_eval_stats,
    evaluation_brain,
    make_tiny_corpus,
    run_recipe,
    one_thread,  # noqa: F401 (an autouse fixture)
)

CASES = {
    # Target labels and a train-mode attack: the fused step, whose first
    # backward (real term + input gradient) runs outside DDP's reducer.
    # The data folder is given: no corpus to generate.
    "vanilla_fused": ("hparams/cnn4_vanilla.yaml", "--warmup_steps=1", "--attack_labels=target", "--attack_mode=train"),
    # The authors' mode: a separate eval-mode input-gradient pass per step.
    # No data folder: the recipe generates the built-in synthetic corpus.
    "similarity": ("hparams/cnn4_similarity.yaml", "--warmup_steps=1", TINY_CORPUS_FLAG),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(str(tmp_path_factory.mktemp("corpus")))


def data_flags(options, request):
    """``--data_folder`` (a corpus made once) unless the case lets the recipe generate its own."""
    return [] if TINY_CORPUS_FLAG in options else [f"--data_folder={request.getfixturevalue('corpus')}"]


def torchrun_probe(probe_dir):
    """The launcher of a 2-process CPU run, with the probe in front of the recipe script."""
    probe = os.path.join(REPO, "tests", "ddp_probe.py")
    return (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", probe, probe_dir)


def read_robustness_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {(row["split"], float(row["eps"])): row for row in csv.DictReader(f)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_gloo_processes_train_and_evaluate_like_one(case, request, tmp_path):
    hparams_file, *options = CASES[case]
    out, probe_dir = str(tmp_path / "run"), str(tmp_path / "probe")
    flags = [*TINY_FLAGS, *options, *data_flags(options, request), f"--output_folder={out}"]
    run_recipe(hparams_file, "--distributed_backend=gloo", "--device=cpu", *flags, launcher=torchrun_probe(probe_dir))
    ranks = [torch.load(os.path.join(probe_dir, f"rank{r}.pt")) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # Adversarial steps ran, and each step all-reduced the gradients once:
    # the attack's passes and the fused first backward added no reduction.
    with open(os.path.join(out, "train_log.txt"), encoding="utf-8") as f:
        log_lines = f.read().splitlines()
    assert "fake_loss" in log_lines[0]
    steps = ranks[0]["optimizer_steps"]
    assert steps >= 3 and ranks[1]["optimizer_steps"] == steps
    for record in ranks:
        assert record["allreduce_backwards"] == steps
        assert record["allreduce_buckets"] % steps == 0

    # Both ranks end training with identical parameters and buffers, which are rank 0's checkpoint.
    state0, state1 = ranks[0]["state_after_fit"], ranks[1]["state_after_fit"]
    assert state0.keys() == state1.keys() == {"compute_features", "model", "normalizer"}
    for module in state0:
        for key in state0[module]:
            assert torch.equal(state0[module][key], state1[module][key]), f"{module}.{key} differs between ranks"
    (checkpoint,) = glob.glob(os.path.join(out, "save", "CKPT*"))
    for module in ("model", "normalizer"):  # the trained state; the log-Mel filters are fixed
        saved = torch.load(os.path.join(checkpoint, f"{module}.ckpt"))
        assert all(torch.equal(saved[key], state0[module][key]) for key in saved)

    # Only rank 0 prepared the data, exported the interface and its model card, and logged (one line
    # for the epoch, one for the test); SpeechBrain's checkpointer saves on rank 0 only.
    preparation = ["prepare_demos"] if data_flags(options, request) else ["generate_synthetic_demos", "prepare_demos"]
    assert ranks[0]["ran_here"] == [*preparation, "validate_inputs", "export_interface", "write_model_card"]
    assert ranks[1]["ran_here"] == []
    assert len(log_lines) == 2 and log_lines[1].startswith("Epoch loaded")

    # Metrics gathered over the 2 ranks equal a single-process evaluation of the checkpoint.
    brain, datasets, hparams = evaluation_brain(hparams_file, *flags)
    single = capture_eval_stats(brain)
    for split in ("valid", "test"):
        brain.evaluate(datasets[split], max_key="UAR", test_loader_kwargs=dict(hparams["test_dataloader_options"]))
    assert len(single) == 2
    for record in ranks:
        assert len(record["eval_stats"]) == 2  # valid (epoch 1), test
        for ddp_stats, single_stats in zip(record["eval_stats"], single):
            assert ddp_stats["UAR"] == single_stats["UAR"]
            assert ddp_stats["accuracy"] == single_stats["accuracy"]
            # Every example counted once: the mean loss matches too.
            assert ddp_stats["loss"] == pytest.approx(single_stats["loss"], rel=1e-5)

    # So do the robustness curves that rank 0 wrote. A train-mode attack takes
    # batch-norm statistics from its batch, and the batches of a shard differ
    # from a single process's: its FGSM rows legitimately differ, its real row must not.
    written = read_robustness_csv(os.path.join(out, "robustness.csv"))
    batch_independent_attack = hparams["attack"].model_mode == "eval"
    for split in ("valid", "test"):
        curve = brain.evaluate_robustness(datasets[split], hparams["eval_eps"])
        for eps, confusion in curve.items():
            row = written[(split, eps)]
            assert int(row["n"]) == int(confusion.counts.sum()) == len(datasets[split])
            if eps == 0 or batch_independent_attack:
                assert float(row["UAR"]) == pytest.approx(confusion.uar(), abs=1e-12)
