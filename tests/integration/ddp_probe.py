"""Runs a recipe's ``train.py`` unchanged, with probes that ``tests/integration/test_ddp.py`` reads.

Usage (one process per rank, as torchrun starts them)::

    python -m torch.distributed.run --nproc_per_node=2 tests/integration/ddp_probe.py PROBE_DIR [--slow_rename] \\
        [--kill_after=N] recipes/DEMoS/train.py hparams/cnn4_vanilla.yaml --distributed_backend=gloo ... \\
        [--- hparams/cnn4_single.yaml --distributed_backend=gloo ...]

The recipe runs exactly as typed after ``PROBE_DIR``; each further argument
list after ``---`` is another run of the same script, one after the other in
the same processes and process group (starting processes costs more than a
tiny run). Run ``i`` of rank ``N`` writes ``PROBE_DIR/run<i>/rank<N>.pt``.

The probes observe:

- a DDP communication hook that counts the reducer's gradient all-reduces;
- every rank's modules (parameters and buffers) and random states as
  training ends, before evaluation reloads the best checkpoint;
- the training batches, optimizer steps and checkpoint saves of this run;
- every rank's evaluation statistics, as ``EmotionBrain.eval_stats`` returns them;
- which functions given to ``run_on_main`` (data preparation, export) ran on each rank.

``--slow_rename`` also delays rank 0 in one place, to pin down an
interleaving: see ``slow_down_checkpoint_renames``. ``--kill_after=N`` kills
every rank with SIGKILL right after the N-th intra-epoch checkpoint is complete,
as a scheduler ending the job would.
"""

import os
import random
import runpy
import signal
import sys
import time

import numpy as np
import speechbrain.core
import speechbrain.utils.checkpoints
import speechbrain.utils.distributed
import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

import ser_adv_brain.runs.datasets
import ser_adv_brain.runs.finish
import ser_adv_brain.training.brain
import ser_adv_brain.training.checkpoints

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for helpers
from helpers import capture_eval_stats  # noqa: E402

RUN_SEPARATOR = "---"
# How long rank 0 waits, at most, before renaming a staged checkpoint.
SLOW_RENAME_SECONDS = 2.0


def unwrapped_state(brain):
    """Copies of every module's state dict, without DDP's ``module.`` prefix."""
    state = {}
    for name, module in brain.modules.items():
        module = getattr(module, "module", module)
        state[name] = {key: value.detach().clone() for key, value in module.state_dict().items()}
    return state


def random_states():
    """This process's torch, numpy and Python global random states, comparable with ``==``."""
    return {
        "torch": torch.get_rng_state().tolist(),
        "numpy": np.random.get_state()[1].tolist(),
        "python": random.getstate(),
    }


def kill_after_intra_epoch_checkpoint(n):
    """Every rank SIGKILLs itself once the ``n``-th intra-epoch checkpoint is complete (the save ends in a barrier)."""
    save, count = speechbrain.core.Brain._save_intra_epoch_ckpt, 0

    def save_then_kill(self):
        nonlocal count
        save(self)
        count += 1
        if count == n:
            os.kill(os.getpid(), signal.SIGKILL)

    speechbrain.core.Brain._save_intra_epoch_ckpt = save_then_kill


def attach_probes(brain, record):
    """Instruments one Brain instance; what it sees goes into ``record``."""
    record.update(allreduce_buckets=0, allreduce_backwards=0, batches=0, optimizer_steps=0, saves=[])
    record["eval_stats"] = capture_eval_stats(brain)
    wrap_distributed, fit, fit_batch, optimizers_step = (
        brain._wrap_distributed,
        brain.fit,
        brain.fit_batch,
        brain.optimizers_step,
    )
    save_checkpoint = brain.checkpointer.save_checkpoint

    def recorded_save_checkpoint(*args, end_of_epoch=True, **kwargs):
        record["saves"].append("end-of-epoch" if end_of_epoch else "intra-epoch")
        return save_checkpoint(*args, end_of_epoch=end_of_epoch, **kwargs)

    brain.checkpointer.save_checkpoint = recorded_save_checkpoint

    def counting_allreduce(state, bucket):
        record["allreduce_buckets"] += 1
        record["allreduce_backwards"] += int(bucket.is_last())
        return default_hooks.allreduce_hook(state, bucket)

    def probed_wrap_distributed():
        wrap_distributed()
        for module in brain.modules.values():
            if isinstance(module, torch.nn.parallel.DistributedDataParallel):
                module.register_comm_hook(None, counting_allreduce)

    def probed_fit(*args, **kwargs):
        fit(*args, **kwargs)
        record["optimizer_step_counter"] = brain.optimizer_step  # restored from the checkpoint on resume
        record["state_after_fit"] = unwrapped_state(brain)
        record["random_state_after_fit"] = random_states()

    def counted_fit_batch(batch):
        record["batches"] += 1
        return fit_batch(batch)

    def counted_optimizers_step():
        record["optimizer_steps"] += 1
        return optimizers_step()

    brain._wrap_distributed, brain.fit = probed_wrap_distributed, probed_fit
    brain.fit_batch, brain.optimizers_step = counted_fit_batch, counted_optimizers_step


def record_main_only_runs(current):
    """Makes ``run_on_main`` (in the recipe script and the package) log, in ``current["record"]``, which functions
    ran here."""
    run_on_main = speechbrain.utils.distributed.run_on_main

    def recording_run_on_main(func, *args, **kwargs):
        def ran(*func_args, **func_kwargs):
            current["record"]["ran_here"].append(func.__name__)
            return func(*func_args, **func_kwargs)

        return run_on_main(ran, *args, **kwargs)

    speechbrain.utils.distributed.run_on_main = recording_run_on_main
    ser_adv_brain.runs.datasets.run_on_main = ser_adv_brain.runs.finish.run_on_main = recording_run_on_main


def share_one_process_group():
    """Lets successive runs of the script use the process group of the first one."""
    init_group, destroy_group = speechbrain.utils.distributed.ddp_init_group, torch.distributed.destroy_process_group

    def init_once(run_opts):
        if not torch.distributed.is_initialized():
            init_group(run_opts)

    speechbrain.utils.distributed.ddp_init_group = init_once
    torch.distributed.destroy_process_group = lambda *args, **kwargs: None
    return destroy_group


def slow_down_checkpoint_renames(probe_dir, rank):
    """Rank 0 renames each staged checkpoint only once rank 1 has decided which checkpoints to delete.

    Rank 1 leaves a mark when it reaches the first barrier of SpeechBrain's
    ``delete_checkpoints``, that is, once it has listed the folder and chosen
    what to delete. Rank 0 waits for that mark (at most
    ``SLOW_RENAME_SECONDS``) before its ``replace_directory``. A checkpointer
    that lets rank 1 list the folder before the rename therefore always shows
    it the folder without the new checkpoint; one that renames before the
    other ranks go on only costs rank 0 the wait.
    """
    marker = os.path.join(probe_dir, "rank1_chose_deletions")
    if rank == 1:
        barrier = speechbrain.utils.checkpoints.ddp_barrier

        def marking_barrier():
            open(marker, "w").close()
            barrier()

        speechbrain.utils.checkpoints.ddp_barrier = marking_barrier
    elif rank == 0:
        staging, replace_directory = (
            ser_adv_brain.training.checkpoints.AtomicCheckpointer._staging,
            ser_adv_brain.training.checkpoints.replace_directory,
        )

        def staging_after_clearing_the_mark(self, final_path):
            # Called on rank 0 before the save's first collective: rank 1 cannot mark this save yet.
            if os.path.exists(marker):
                os.remove(marker)
            return staging(self, final_path)

        def slow_replace_directory(source, target):
            deadline = time.monotonic() + SLOW_RENAME_SECONDS
            while not os.path.exists(marker) and time.monotonic() < deadline:
                time.sleep(0.02)
            replace_directory(source, target)

        ser_adv_brain.training.checkpoints.AtomicCheckpointer._staging = staging_after_clearing_the_mark
        ser_adv_brain.training.checkpoints.replace_directory = slow_replace_directory


def main(probe_dir, argv):
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    os.makedirs(probe_dir, exist_ok=True)
    while argv[0].startswith("--"):
        option, argv = argv[0], argv[1:]
        if option == "--slow_rename":
            slow_down_checkpoint_renames(probe_dir, rank)
        elif option.startswith("--kill_after="):
            kill_after_intra_epoch_checkpoint(int(option.split("=")[1]))
        else:
            raise SystemExit(f"ddp_probe.py: unknown option {option}")
    script, *argv = argv
    runs = [[]]
    for arg in argv:
        if arg == RUN_SEPARATOR:
            runs.append([])
        else:
            runs[-1].append(arg)

    current = {}
    record_main_only_runs(current)
    destroy_group = share_one_process_group()
    init = ser_adv_brain.training.brain.EmotionBrain.__init__

    def probed_init(brain, *args, **kwargs):
        init(brain, *args, **kwargs)
        attach_probes(brain, current["record"])

    ser_adv_brain.training.brain.EmotionBrain.__init__ = probed_init  # the recipe's Brain subclasses it
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as python does for a script it runs
    for index, run_argv in enumerate(runs):
        current["record"] = record = {"rank": rank, "world_size": world_size, "ran_here": []}
        sys.argv = [script, *run_argv]
        runpy.run_path(script, run_name="__main__")
        os.makedirs(os.path.join(probe_dir, f"run{index}"), exist_ok=True)
        torch.save(record, os.path.join(probe_dir, f"run{index}", f"rank{rank}.pt"))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank tears down its connections while another still uses them
        destroy_group()  # an undestroyed gloo group can abort the process at interpreter exit


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
