"""Runs a recipe's ``train.py`` unchanged, with probes that ``tests/test_ddp.py`` reads.

Usage (one process per rank, as torchrun starts them)::

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_probe.py PROBE_DIR \\
        recipes/DEMoS/train.py hparams/cnn4_vanilla.yaml --distributed_backend=gloo ...

The recipe runs exactly as typed after ``PROBE_DIR``. The probes only observe:

- a DDP communication hook that counts the reducer's gradient all-reduces;
- every rank's modules (parameters and buffers) as training ends, before
  evaluation reloads the best checkpoint;
- every rank's evaluation statistics, as ``EmotionBrain.eval_stats`` returns them;
- which functions given to ``run_on_main`` (data preparation, export) ran on each rank.

Each rank writes ``PROBE_DIR/rank<N>.pt``.
"""

import os
import runpy
import sys

import speechbrain.utils.distributed
import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

import ser_adv_brain.recipe
from helpers_iface import capture_eval_stats


def unwrapped_state(brain):
    """Copies of every module's state dict, without DDP's ``module.`` prefix."""
    state = {}
    for name, module in brain.modules.items():
        module = getattr(module, "module", module)
        state[name] = {key: value.detach().clone() for key, value in module.state_dict().items()}
    return state


def attach_probes(brain, record):
    """Instruments one Brain instance; what it sees goes into ``record``."""
    record.update(allreduce_buckets=0, allreduce_backwards=0, eval_stats=capture_eval_stats(brain))
    wrap_distributed, fit = brain._wrap_distributed, brain.fit

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
        record["optimizer_steps"] = brain.optimizer_step
        record["state_after_fit"] = unwrapped_state(brain)

    brain._wrap_distributed, brain.fit = probed_wrap_distributed, probed_fit


def record_main_only_runs(record):
    """Makes ``run_on_main`` (in the recipe script and the package) log which functions ran on this rank."""
    record["ran_here"] = []
    run_on_main = speechbrain.utils.distributed.run_on_main

    def recording_run_on_main(func, *args, **kwargs):
        def ran(*func_args, **func_kwargs):
            record["ran_here"].append(func.__name__)
            return func(*func_args, **func_kwargs)

        return run_on_main(ran, *args, **kwargs)

    speechbrain.utils.distributed.run_on_main = ser_adv_brain.recipe.run_on_main = recording_run_on_main


def main(probe_dir, script, argv):
    record = {"rank": int(os.environ.get("RANK", 0)), "world_size": int(os.environ.get("WORLD_SIZE", 1))}
    record_main_only_runs(record)
    build_brain = ser_adv_brain.recipe.build_brain

    def probed_build_brain(hparams, run_opts):
        brain = build_brain(hparams, run_opts)
        attach_probes(brain, record)
        return brain

    ser_adv_brain.recipe.build_brain = probed_build_brain
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")
    os.makedirs(probe_dir, exist_ok=True)
    torch.save(record, os.path.join(probe_dir, f"rank{record['rank']}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
