"""Grids of recipe runs, resumable: the runs of the paper's grid (``sweep``) and of the benchmark.

A run is ``python <recipe>/train.py <yaml> --output_folder=<grid>/<name>[/<replicate>] <options>``:
a name (a yaml file, or a yaml file at one eps), then replicates (seed, speaker fold, CPU kernel
setting), each in a folder of its own. A run is finished when its folder holds the model card of
its exported interface (``interface/README.md``), the last file ``train.py`` writes. Finished runs
are skipped; any other run is started with the same command, which resumes it from its last
checkpoint, so a killed grid, rerun with the same command, goes on where it stopped.
"""

import concurrent.futures
import logging
import os
import queue
import subprocess
import sys
from dataclasses import dataclass

import speechbrain as sb
import yaml

logger = logging.getLogger(__name__)

FINISHED_MARKER = os.path.join("interface", "README.md")  # written last by train.py (the model card)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CPU kernel settings: what a run computes depends on the kernels torch picks for the CPU (ATen's
# vector kernels, oneDNN's convolutions, MKL's BLAS); these variables make this host pick those of
# another. "native" sets none (this host's own). Only kernels the CPU has can be chosen.
CPU_KERNELS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


@dataclass(frozen=True)
class Replicate:
    """One replicate of a run: its seed (``--seed``), speaker fold (``--fold``) and CPU kernel setting, each
    None where the yaml's own (or this host's) is kept."""

    seed: int = None
    fold: int = None
    kernels: str = None

    @property
    def name(self):
        """``fold0-seed1234-avx2``, ``seed1234``...; empty for none.

        Example
        -------
        >>> Replicate(seed=1234, fold=0).name, Replicate().name
        ('fold0-seed1234', '')
        """
        parts = [] if self.fold is None else [f"fold{self.fold}"]
        parts += [] if self.seed is None else [f"seed{self.seed}"]
        return "-".join(parts + ([] if self.kernels is None else [self.kernels]))

    @property
    def options(self):
        """The run's command-line options for its seed and fold."""
        return ([] if self.seed is None else [f"--seed={self.seed}"]) + ([] if self.fold is None else [f"--fold={self.fold}"])

    @property
    def environment(self):
        """The variables of its CPU kernel setting."""
        return CPU_KERNELS[self.kernels] if self.kernels else {}


def replicates(seeds=(None,), folds=(None,), kernels=(None,)):
    """Every combination, fold by fold (a partial grid holds whole folds first)."""
    return [Replicate(seed, fold, kernel) for fold in folds for seed in seeds for kernel in kernels]


@dataclass(frozen=True)
class GridRun:
    """One run of a grid: ``name`` (its folder under ``grid``), its yaml, its own ``options`` and its replicate.

    ``cell`` says what the run stands for in its grid's tables (the paper's model, training and eps).
    """

    name: str
    hparams_file: str
    grid: str
    options: tuple = ()
    replicate: Replicate = Replicate()
    cell: tuple = None

    @property
    def label(self):
        """The run's name in the log and the tables: its folder under the grid."""
        return os.path.join(self.name, self.replicate.name) if self.replicate.name else self.name

    @property
    def folder(self):
        return os.path.join(self.grid, self.label)

    @property
    def finished(self):
        return os.path.isfile(os.path.join(self.folder, FINISHED_MARKER))

    def command(self, train_script, overrides):
        """``train.py`` with the run's own options, then ``overrides`` but the yaml keys its yaml lacks."""
        keys, own = yaml_override_keys(overrides), top_level_keys(self.hparams_file)
        passed = [option for option in overrides if option_key(option) not in keys - own]
        return [sys.executable, train_script, self.hparams_file, f"--output_folder={self.folder}", *self.options,
                *self.replicate.options, *passed]  # fmt: skip


def option_key(option):
    """``base_channels`` for ``--base_channels=16``."""
    return option.split("=", 1)[0].lstrip("-")


def yaml_override_keys(overrides):
    """The keys of the yaml overrides among command-line options (the others are SpeechBrain's run options)."""
    _, _, text = sb.parse_arguments(["hparams.yaml", *overrides])
    return set(yaml.safe_load(text) or {})


def top_level_keys(hparams_file):
    """The keys a yaml file defines, read without loading it (nothing of it runs)."""
    with open(hparams_file, encoding="utf-8") as f:
        node = yaml.compose(f)
    return {key.value for key, _ in node.value} if node is not None else set()


def unknown_override_keys(runs, overrides):
    """The yaml keys among ``overrides`` that no yaml of the grid has (a typo, most likely)."""
    known = set().union(*(top_level_keys(f) for f in {run.hparams_file for run in runs}))
    return sorted(yaml_override_keys(overrides) - known)


def run_grid(runs, train_script, overrides, gpus=()):
    """Runs every unfinished run (one per GPU at a time with ``gpus``); returns the labels of the failed ones.

    A run's output goes to ``<its folder>/sweep_log.txt`` (appended: a resumed run keeps its history).
    """
    todo = [run for run in runs if not run.finished]
    for run in runs:
        if run.finished:
            logger.info(f"{run.label}: finished, skipped")
    devices = queue.Queue()
    for gpu in gpus or [None]:
        devices.put(gpu)

    def launch(run):
        device = devices.get()
        try:
            if run.finished:  # by another process over the same folder since this one started
                logger.info(f"{run.label}: finished meanwhile, skipped")
                return None
            env = dict(os.environ)
            # The runs import the ser_adv_brain this process imports (train.py's folder, not the cwd, is on their path).
            env["PYTHONPATH"] = os.pathsep.join(p for p in [PACKAGE_ROOT, env.get("PYTHONPATH")] if p)
            env.update(run.replicate.environment)
            if device is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(device)
            state = "resumed" if os.path.isdir(run.folder) else "started"
            logger.info(f"{run.label}: {state}" + ("" if device is None else f" on GPU {device}"))
            os.makedirs(run.folder, exist_ok=True)
            with open(os.path.join(run.folder, "sweep_log.txt"), "a", encoding="utf-8") as log:
                code = subprocess.call(run.command(train_script, overrides), stdout=log, stderr=subprocess.STDOUT, env=env)
            if code != 0 or not run.finished:
                logger.error(f"{run.label}: failed (exit code {code}); see {os.path.join(run.folder, 'sweep_log.txt')}")
                return run.label
            logger.info(f"{run.label}: finished")
            return None
        finally:
            devices.put(device)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(gpus))) as pool:
        return [label for label in pool.map(launch, todo) if label]
