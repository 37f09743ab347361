"""DDP through SpeechBrain's launcher on CPU: two gloo processes train, checkpoint, resume and evaluate as one.

Every run starts ``torchrun --nproc_per_node=2 recipes/DEMoS/train.py ...
--distributed_backend=gloo`` through ``tests/integration/ddp_probe.py``, which counts the
reducer's all-reduces and records every rank's state, metrics and saves. Three
launches are shared by all the tests (module-scoped fixtures):

- ``long_run``: 3 epochs, then the same command with 7 epochs, which resumes:
  checkpoints are deleted, and the best one, not the latest, is tested;
- ``interval_run``: checkpoints every 2 batches, with gradient accumulation;
  ``resumed_interval_run`` is the same command killed after its second
  checkpoint and run again, which must end as ``interval_run`` on every rank;
- ``configurations_run``: the other step configurations, one epoch each, one
  after the other in the same two processes.

The dev and test splits have 21 utterances each (one speaker of 7 emotions x 3),
which 2 processes cannot share evenly: a padded sampler would count one twice.
The long and interval runs slow the main process down between a checkpoint's
save and its rename (``ddp_probe.py --slow_rename``), so that a rank listing
the checkpoint folder before the rename always sees another folder than
rank 0. A collective that desynchronises raises within the 30-second timeout
the runs set (``--ddp_timeout_minutes=0.5``), instead of hanging.
"""

import csv
import glob
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from helpers import DEMOS_TRAIN, REPO_ROOT, capture_eval_stats, evaluation_brain, run_command, subprocess_env

from ser_adv_brain.data.synthetic import generate_synthetic_demos

CORPUS = {"n_speakers": 6, "utterances_per_emotion": 3, "neutral_per_speaker": 0, "seed": 1}
SPLIT_SIZE = 21  # utterances in dev and in test: one speaker each
FLAGS = [
    "--split_ratio=[4, 1, 1]",
    "--base_channels=4",
    "--n_frames=100",
    "--batch_size=8",
    "--eval_eps=[0.0, 0.1]",
    "--noprogressbar",
    "--distributed_backend=gloo",
    "--device=cpu",
    "--ddp_timeout_minutes=0.5",
]

# The training steps (ser_adv_brain.training_steps), clean and adversarial, each
# with its launch: "long" and "interval" are the shared runs, "configurations"
# runs the rest one after the other.
CONFIGURATIONS = {
    # The authors' mode: eval-mode attack, similarity distance coupling the branches.
    "similarity_coupled_eval": ("long", "hparams/cnn4_similarity.yaml"),
    # Target labels and a train-mode attack: the fused step, whose first
    # backward (real term + input gradient) runs outside DDP's reducer.
    "vanilla_fused": ("interval", "hparams/cnn4_vanilla.yaml", "--attack_labels=target", "--attack_mode=train"),
    "single": ("configurations", "hparams/cnn4_single.yaml"),
    "vanilla_eval": ("configurations", "hparams/cnn4_vanilla.yaml"),
    # Input gradient from the training forward, real branch backpropagated separately.
    "vanilla_train": ("configurations", "hparams/cnn4_vanilla.yaml", "--attack_mode=train"),
    # The coupled similarity step with the input gradient from the training forward.
    "similarity_coupled_train": ("configurations", "hparams/cnn4_similarity.yaml", "--attack_mode=train"),
    "similarity_detached_eval": ("configurations", "hparams/cnn4_similarity.yaml", "--detach_real_embedding=True"),
    # The defences: noise baselines, PGD-k (PGD-2 keeps the iterative attacks cheap), fast and TRADES.
    "raw_noise": ("configurations", "hparams/cnn4_raw_noise.yaml"),
    "logmel_noise": ("configurations", "hparams/cnn4_logmel_noise.yaml"),
    "pgd": ("configurations", "hparams/cnn4_pgd.yaml", "--training_steps=2"),
    "fast": ("configurations", "hparams/cnn4_fast.yaml", "--attack_labels=target", "--attack_mode=train"),
    # The KL couples the branches: real and fake go through fit_batch's one backward.
    "trades": ("configurations", "hparams/cnn4_trades.yaml", "--training_steps=2"),
}
# The configurations launch checks training steps, not the evaluation: its suite is one FGSM budget.
SMALL_SUITE = [
    "--attack_suite=\n  - !new:ser_adv_brain.attacks.FGSM\n      eps: 0.1",
    "--suite_budgets={features_linf: [0.1]}",
]
INTERVAL_FLAGS = [
    "--number_of_epochs=1",
    "--grad_accumulation_factor=2",
    "--ckpt_interval_minutes=0",
    "--ckpt_interval_steps=2",
]
CORPUS_FLAG = "--synthetic_corpus={" + ", ".join(f"{k}: {v}" for k, v in CORPUS.items()) + "}"


def torchrun_probe(probe_dir, *probe_options):
    """The launcher of a 2-process CPU run, with the probe in front of the recipe script."""
    probe = os.path.join(REPO_ROOT, "tests", "integration", "ddp_probe.py")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        probe,
        probe_dir,
        *probe_options,
    ]


def launch_command(probe_dir, runs, *probe_options):
    """The torchrun command that runs the DEMoS recipe once per ``(hparams_file, flags)``, one after the other."""
    args = torchrun_probe(probe_dir, *probe_options) + [DEMOS_TRAIN]
    for index, (hparams_file, flags) in enumerate(runs):
        args += (["---"] if index else []) + [os.path.join(REPO_ROOT, hparams_file), *flags]
    return args


def launch(probe_dir, runs, *probe_options):
    """Runs the DEMoS recipe once per ``(hparams_file, flags)`` in one torchrun launch; each run's records per rank."""
    run_command(launch_command(probe_dir, runs, *probe_options))
    return [[torch.load(os.path.join(probe_dir, f"run{i}", f"rank{r}.pt")) for r in (0, 1)] for i in range(len(runs))]


def configuration_flags(name):
    _, hparams_file, *options = CONFIGURATIONS[name]
    warmup = [] if name == "single" else ["--warmup_steps=2"]
    return hparams_file, [*FLAGS, *warmup, *options]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_synthetic_demos(str(tmp_path_factory.mktemp("corpus")), **CORPUS)


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """3 epochs, then the same command with 7: it resumes. The recipe generates its own corpus."""
    tmp = tmp_path_factory.mktemp("long")
    hparams_file, flags = configuration_flags("similarity_coupled_eval")
    flags += [CORPUS_FLAG, f"--output_folder={tmp / 'run'}"]
    first = launch(str(tmp / "probe1"), [(hparams_file, [*flags, "--number_of_epochs=3"])], "--slow_rename")[0]
    resumed = launch(str(tmp / "probe2"), [(hparams_file, [*flags, "--number_of_epochs=7"])], "--slow_rename")[0]
    out = str(tmp / "run")
    return {
        "hparams_file": hparams_file,
        "flags": [*flags, "--number_of_epochs=7"],
        "out": out,
        "log": read_log(out),  # before the tests' own evaluations append to it
        "first": first,
        "resumed": resumed,
    }


@pytest.fixture(scope="module")
def interval_run(tmp_path_factory, corpus):
    """One epoch with a checkpoint every 2 batches and gradients accumulated over 2 batches."""
    tmp = tmp_path_factory.mktemp("interval")
    hparams_file, flags = configuration_flags("vanilla_fused")
    flags += [f"--data_folder={corpus}", f"--output_folder={tmp / 'run'}", *INTERVAL_FLAGS]
    (ranks,) = launch(str(tmp / "probe"), [(hparams_file, flags)], "--slow_rename")
    return {"hparams_file": hparams_file, "flags": flags, "out": str(tmp / "run"), "ranks": ranks}


@pytest.fixture(scope="module")
def resumed_interval_run(tmp_path_factory, corpus):
    """``interval_run``'s command, SIGKILLed on every rank after its second checkpoint (4 of 6 batches), then rerun.

    Returns the resumed launch's records and, read before it, both ranks' random-state files of the
    checkpoint it resumes from.
    """
    tmp = tmp_path_factory.mktemp("resumed_interval")
    hparams_file, flags = configuration_flags("vanilla_fused")
    flags += [f"--data_folder={corpus}", f"--output_folder={tmp / 'run'}", *INTERVAL_FLAGS]
    killed = subprocess.run(
        launch_command(str(tmp / "killed"), [(hparams_file, flags)], "--slow_rename", "--kill_after=2"),
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode != 0 and f"Signal {int(signal.SIGKILL)} (SIGKILL)" in killed.stderr, killed.stderr[-3000:]
    (checkpoint,) = checkpoint_dirs(str(tmp / "run"))
    random_states = [
        open(os.path.join(checkpoint, name), "rb").read() for name in ("random_state.ckpt", "random_state.ckpt.rank1")
    ]
    (ranks,) = launch(str(tmp / "resumed"), [(hparams_file, flags)], "--slow_rename")
    return {"out": str(tmp / "run"), "ranks": ranks, "random_state_files": random_states}


@pytest.fixture(scope="module")
def configurations_run(tmp_path_factory, corpus):
    tmp = tmp_path_factory.mktemp("configurations")
    names = [name for name, (launch_name, *_) in CONFIGURATIONS.items() if launch_name == "configurations"]
    runs = []
    for name in names:
        hparams_file, flags = configuration_flags(name)
        runs.append(
            (
                hparams_file,
                [
                    *flags,
                    *SMALL_SUITE,
                    f"--data_folder={corpus}",
                    f"--output_folder={tmp / name}",
                    "--number_of_epochs=1",
                ],
            )
        )
    records = launch(str(tmp / "probe"), runs)
    return {name: {"out": str(tmp / name), "ranks": ranks} for name, ranks in zip(names, records)}


def read_log(out):
    with open(os.path.join(out, "train_log.txt"), encoding="utf-8") as f:
        return f.read().splitlines()


def epoch_lines(log_lines):
    """``{epoch: valid UAR}`` from the train log's epoch lines."""
    found = {}
    for line in log_lines:
        match = re.match(r"epoch: (\d+), .* - valid loss: \S+, valid UAR: (\S+),", line)
        if match:
            found[int(match.group(1))] = float(match.group(2))
    return found


def read_robustness_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {(row["split"], float(row["eps"])): row for row in csv.DictReader(f)}


def checkpoint_dirs(out):
    return sorted(glob.glob(os.path.join(out, "save", "CKPT*")))


def checkpoint_epoch(path):
    """The epoch counter saved in a checkpoint."""
    with open(os.path.join(path, "counter.ckpt"), encoding="utf-8") as f:
        return int(f.read())


def assert_ranks_agree(ranks):
    """Both ranks took the same steps, all-reduced once per optimizer step, and end with identical modules."""
    assert [r["world_size"] for r in ranks] == [2, 2]
    steps = ranks[0]["optimizer_steps"]
    assert steps >= 3 and ranks[1]["optimizer_steps"] == steps
    for record in ranks:
        assert record["allreduce_backwards"] == steps
        assert record["allreduce_buckets"] % steps == 0
    state0, state1 = ranks[0]["state_after_fit"], ranks[1]["state_after_fit"]
    assert state0.keys() == state1.keys() == {"compute_features", "model", "normalizer"}
    for module in state0:
        for key in state0[module]:
            assert torch.equal(state0[module][key], state1[module][key]), f"{module}.{key} differs between ranks"


def configuration_result(name, request):
    """The output folder and the rank records of the (first) run of a step configuration."""
    launch_name = CONFIGURATIONS[name][0]
    if launch_name == "configurations":
        return request.getfixturevalue("configurations_run")[name]
    run = request.getfixturevalue(f"{launch_name}_run")
    return {"out": run["out"], "ranks": run["first"] if launch_name == "long" else run["ranks"]}


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_every_step_configuration_all_reduces_once_per_optimizer_step(name, request):
    result = configuration_result(name, request)
    assert_ranks_agree(result["ranks"])
    # Only rank 0 prepared the data, validated it, drew the pictures, and exported the interface and its model card.
    preparation = (
        ["generate_synthetic_demos", "prepare_demos"] if name == "similarity_coupled_eval" else ["prepare_demos"]
    )
    assert result["ranks"][0]["ran_here"] == [
        *preparation,
        "validate_inputs",
        "draw_run_pictures",
        "export_interface",
        "write_model_card",
    ]
    assert result["ranks"][1]["ran_here"] == []
    header = read_log(result["out"])[0]
    if name == "single":
        assert "fake_loss" not in header
    else:  # adversarial steps ran after the 2 warm-up steps
        assert ("train kl:" if name == "trades" else "fake_loss") in header and result["ranks"][0][
            "optimizer_steps"
        ] > 2


def test_gradient_accumulation_all_reduces_only_on_optimizer_steps(interval_run):
    ranks = interval_run["ranks"]
    for record in ranks:
        # 42 training utterances per rank in batches of 8: 6 batches, a step every 2.
        assert record["batches"] == 6
        assert record["optimizer_steps"] == 3 == record["allreduce_backwards"]


def test_interval_checkpoints_survive_a_slow_rename(interval_run):
    """A checkpoint every 2 batches: each interval save deletes the one before, while rank 0 is slow to rename."""
    for record in interval_run["ranks"]:
        assert record["saves"] == ["intra-epoch"] * 3 + ["end-of-epoch"]
    # The end-of-epoch checkpoint replaced the last interval one.
    (checkpoint,) = checkpoint_dirs(interval_run["out"])
    assert "brain_intra_epoch_ckpt" not in open(os.path.join(checkpoint, "CKPT.yaml"), encoding="utf-8").read()


def test_a_killed_run_resumes_on_every_rank_as_if_never_killed(interval_run, resumed_interval_run):
    """Each rank draws the random crops of its own shard: each must resume from its own random state."""
    rank0_file, rank1_file = resumed_interval_run["random_state_files"]
    assert rank0_file != rank1_file  # the ranks' states differ where the run was killed: the case at stake
    for reference, resumed in zip(interval_run["ranks"], resumed_interval_run["ranks"]):
        assert resumed["saves"] == ["intra-epoch", "end-of-epoch"]  # batches 5 and 6 only
        assert resumed["random_state_after_fit"] == reference["random_state_after_fit"], f"rank {reference['rank']}"
        for module, state in reference["state_after_fit"].items():
            for key, value in state.items():
                assert torch.equal(resumed["state_after_fit"][module][key], value), (
                    f"rank {reference['rank']}: {module}.{key}"
                )
    for name in ("train_log.txt", "robustness.csv"):
        with (
            open(os.path.join(interval_run["out"], name), encoding="utf-8") as f,
            open(os.path.join(resumed_interval_run["out"], name), encoding="utf-8") as g,
        ):
            assert g.read() == f.read(), name


def test_end_of_epoch_checkpoints_survive_a_slow_rename_and_the_best_is_tested(long_run):
    """7 epochs: older checkpoints are deleted on every rank alike; the test loads the best dev epoch.

    Which epoch is best depends on the host's floats, so it is read from the run's own dev UARs, exact as the
    checkpointer compared them: the log's three digits make ties of other UARs (that the best, not the latest,
    is tested: ``tests/unit/test_brain.py``, on scripted dev UARs).
    """
    log_lines = long_run["log"]
    exact = [
        stats["UAR"] for stats in long_run["first"][0]["eval_stats"][:3] + long_run["resumed"][0]["eval_stats"][:4]
    ]
    dev_uar = dict(enumerate(exact, start=1))
    logged = epoch_lines(log_lines)
    assert sorted(logged) == [1, 2, 3, 4, 5, 6, 7]
    assert all(logged[epoch] == pytest.approx(uar, abs=5e-3) for epoch, uar in dev_uar.items())
    for record in long_run["first"]:
        assert record["saves"] == ["end-of-epoch"] * 3
    for record in long_run["resumed"]:
        assert record["saves"] == ["end-of-epoch"] * 4
    # The best dev UAR (the latest of equals, as SpeechBrain breaks ties) and the latest survive.
    best = max(sorted(dev_uar), key=lambda epoch: (dev_uar[epoch], epoch))
    kept = checkpoint_dirs(long_run["out"])
    assert sorted(checkpoint_epoch(path) for path in kept) == sorted({best, 7})
    # The last log line is the resumed run's test, of the best checkpoint.
    assert log_lines[-1].split(" - ")[0] == f"Epoch loaded: {best}"


def test_resume_under_ddp_goes_on_from_the_checkpoint(long_run):
    first, resumed = long_run["first"], long_run["resumed"]
    assert_ranks_agree(first)
    assert_ranks_agree(resumed)
    for before, after in zip(first, resumed):
        # Epochs 4 to 7 only, as many steps each as epochs 1 to 3, counted on from them.
        assert after["optimizer_steps"] == before["optimizer_steps"] // 3 * 4
        assert after["optimizer_step_counter"] == before["optimizer_step_counter"] + after["optimizer_steps"]
        assert len(after["eval_stats"]) == 5  # valid (epochs 4 to 7), test
    # The trained modules of the last epoch are the latest checkpoint's.
    (latest,) = [path for path in checkpoint_dirs(long_run["out"]) if checkpoint_epoch(path) == 7]
    for module in ("model", "normalizer"):  # the trained state; the log-Mel filters are fixed
        saved = torch.load(os.path.join(latest, f"{module}.ckpt"))
        assert all(torch.equal(saved[key], resumed[0]["state_after_fit"][module][key]) for key in saved)


def test_uneven_evaluation_shards_count_every_utterance_once(long_run):
    """DDP metrics on 21 utterances (shards of 11 and 10) equal a single-process evaluation of the same checkpoint."""
    brain, datasets, hparams = evaluation_brain(long_run["hparams_file"], *long_run["flags"])
    assert len(datasets["valid"]) == len(datasets["test"]) == SPLIT_SIZE
    single = capture_eval_stats(brain)
    loader_kwargs = hparams["test_dataloader_options"]
    brain.evaluate(datasets["valid"], max_key=None, test_loader_kwargs=dict(loader_kwargs))  # the latest: epoch 7
    brain.evaluate(datasets["test"], max_key="UAR", test_loader_kwargs=dict(loader_kwargs))  # the best
    for record in long_run["resumed"]:
        for ddp_stats, single_stats in zip(record["eval_stats"][-2:], single):
            assert ddp_stats["UAR"] == single_stats["UAR"]
            assert ddp_stats["accuracy"] == single_stats["accuracy"]
            # Every utterance counted once: the mean loss matches too.
            assert ddp_stats["loss"] == pytest.approx(single_stats["loss"], rel=1e-5)

    # So do the robustness curves that rank 0 wrote (an eval-mode attack: batch-independent).
    assert hparams["attack"].model_mode == "eval"
    written = read_robustness_csv(os.path.join(long_run["out"], "robustness.csv"))
    for split in ("valid", "test"):
        curve = brain.evaluate_under_attack(datasets[split], hparams["attack"], hparams["eval_eps"])
        for eps, confusion in curve.items():
            row = written[(split, eps)]
            assert int(row["n"]) == int(confusion.counts.sum()) == SPLIT_SIZE
            assert float(row["UAR"]) == pytest.approx(confusion.uar(), abs=1e-12)
