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
import pydoc
import queue
import subprocess
import sys
import time
from dataclasses import dataclass

import speechbrain as sb
import yaml

from ser_adv_brain.models import takes_waveform

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
        return ([] if self.seed is None else [f"--seed={self.seed}"]) + (
            [] if self.fold is None else [f"--fold={self.fold}"]
        )

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
        keys, own = set(yaml_overrides(overrides)), top_level_keys(self.hparams_file)
        passed = [option for option in overrides if option_key(option) not in keys - own]
        return [
            sys.executable,
            train_script,
            self.hparams_file,
            f"--output_folder={self.folder}",
            *self.options,
            *self.replicate.options,
            *passed,
        ]


def hparams_folder(recipe):
    """A recipe's yaml files: ``<recipe>/hparams``, else the repository's ``hparams/`` two levels up (DEMoS's,
    ``recipes/DEMoS`` -> ``hparams``), found from the recipe the user gives, not from where the package lies."""
    own = os.path.join(recipe, "hparams")
    return own if os.path.isdir(own) else os.path.join(recipe, os.pardir, os.pardir, "hparams")


def add_grid_options(parser, default_folder):
    """The options every grid command shares; ``default_folder`` names the output folder's default."""
    parser.add_argument("recipe", help="recipe folder holding train.py (recipes/DEMoS, recipes/EmoDB)")
    parser.add_argument("--output_folder", default=None, help=f"the grid's folder (default: {default_folder})")
    parser.add_argument("--hparams_dir", default=None, help="default: <recipe>/hparams, else the repository's hparams/")
    parser.add_argument("--gpus", nargs="+", default=[], help="GPU ids: one run per GPU at a time")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="without --gpus, runs at a time on the CPU (default 1), each with its share of the cores",
    )


def positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not a positive number")
    return value


def check_grid_options(parser, args, overrides, own_options, suffix):
    """Refuses the run options the grid sets itself (``own_options``: option -> the grid's own option), finds
    ``train.py`` and fills in the folders' defaults (``results/<recipe name><suffix>``); returns ``train.py``."""
    if args.gpus and args.jobs != 1:
        parser.error("--jobs is for the CPU; with --gpus, one run per GPU runs at a time")
    for option in overrides:
        key = option.split("=")[0]
        if key in own_options:
            parser.error(f"{key} is set per run (use {own_options[key]})")
    train_script = os.path.join(args.recipe, "train.py")
    if not os.path.isfile(train_script):
        parser.error(f"{args.recipe} has no train.py")
    args.hparams_dir = os.path.normpath(args.hparams_dir or hparams_folder(args.recipe))
    args.output_folder = args.output_folder or os.path.join(
        "results", os.path.basename(os.path.normpath(args.recipe)) + suffix
    )
    return train_script


def option_key(option):
    """``base_channels`` for ``--base_channels=16``."""
    return option.split("=", 1)[0].lstrip("-")


def yaml_overrides(overrides):
    """The yaml overrides among command-line options, key -> value (the others are SpeechBrain's run options)."""
    _, _, text = sb.parse_arguments(["hparams.yaml", *overrides])
    return yaml.safe_load(text) or {}


def top_level_nodes(hparams_file):
    """A yaml file's top-level keys and their value nodes, read without loading it (nothing of it runs)."""
    with open(hparams_file, encoding="utf-8") as f:
        node = yaml.compose(f)
    return {key.value: value for key, value in node.value} if node is not None else {}


def yaml_model_takes_waveform(hparams_file):
    """Whether the class a yaml file's ``model: !new:<class>`` names takes the waveform (its ``input_domain``,
    ``models.takes_waveform``), read without building the model (a self-supervised encoder's is a download)."""
    node = top_level_nodes(hparams_file).get("model")
    tag = getattr(node, "tag", None) or ""
    return tag.startswith("!new:") and takes_waveform(pydoc.locate(tag[len("!new:") :]))


def top_level_keys(hparams_file):
    """The keys a yaml file defines."""
    return set(top_level_nodes(hparams_file))


def top_level_int(hparams_file, key):
    """The plain integer a yaml file gives ``key`` at its top level; None for anything else (a ``!ref``...).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    ...     _ = f.write("n_folds: 5\\nfold: !ref <n_folds>\\n")
    >>> top_level_int(f.name, "n_folds"), top_level_int(f.name, "fold"), top_level_int(f.name, "seed")
    (5, None, None)
    >>> os.remove(f.name)
    """
    node = top_level_nodes(hparams_file).get(key)
    return int(node.value) if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int" else None


def override_problems(runs, overrides):
    """What would fail every run it reaches, found before any starts: a yaml key among ``overrides`` that no
    yaml of the grid has (a typo, most likely), a ``--data_folder`` that is not a folder, a fold (the grid's or
    ``--fold``) outside a yaml's ``n_folds``. Returns one sentence per problem."""
    values, files = yaml_overrides(overrides), sorted({run.hparams_file for run in runs})
    problems = []
    unknown = sorted(set(values) - set().union(*(top_level_keys(f) for f in files)))
    if unknown:
        problems.append(f"no yaml of the grid has the key(s) {unknown} (from {overrides})")
    data_folder = values.get("data_folder")
    if data_folder is not None and not os.path.isdir(str(data_folder)):
        problems.append(f"--data_folder={data_folder} is not a folder")
    beyond = {}  # (n_folds, folds outside it) -> the yaml files
    for hparams_file in files:
        n_folds = values.get("n_folds", top_level_int(hparams_file, "n_folds"))
        folds = {run.replicate.fold for run in runs if run.hparams_file == hparams_file} - {None}
        folds = folds or ({values["fold"]} if isinstance(values.get("fold"), int) else set())
        outside = tuple(sorted(fold for fold in folds if isinstance(n_folds, int) and not 0 <= fold < n_folds))
        if outside:
            beyond.setdefault((n_folds, outside), []).append(os.path.basename(hparams_file))
    for (n_folds, outside), names in beyond.items():
        which = "every yaml of the grid has" if len(names) == len(files) else f"{', '.join(names)} have"
        problems.append(f"{which} n_folds: {n_folds} (folds 0 to {n_folds - 1}), not fold(s) {list(outside)}")
    return problems


@dataclass(frozen=True)
class Job:
    """A command a grid runs in a process of its own: a run's training, or its evaluation.

    It is done when ``done_file`` exists; its output goes to ``log_file`` (appended: a resumed job keeps its
    history); ``environment`` adds to the parent's variables.
    """

    label: str
    command: tuple
    done_file: str
    log_file: str
    environment: tuple = ()

    @property
    def done(self):
        return os.path.isfile(self.done_file)


def training_job(run, train_script, overrides):
    """The job that trains ``run`` (or resumes it) and exports its interface."""
    return Job(
        run.label,
        tuple(run.command(train_script, overrides)),
        os.path.join(run.folder, FINISHED_MARKER),
        os.path.join(run.folder, "sweep_log.txt"),
        tuple(run.replicate.environment.items()),
    )


def run_jobs(jobs, gpus=(), cpu_jobs=1):
    """Runs every job not done (one per GPU at a time with ``gpus``, else ``cpu_jobs`` at a time on the CPU);
    returns the labels of the failed ones.

    Several jobs on the CPU each get ``OMP_NUM_THREADS`` = cores / ``cpu_jobs`` unless it is set: torch would
    give each of them every core, and they would slow each other down.
    """
    for job in jobs:
        if job.done:
            logger.info(f"{job.label}: done, skipped")
    slots = list(gpus) or [None] * cpu_jobs
    devices = queue.Queue()
    for gpu in slots:
        devices.put(gpu)
    threads = {} if gpus or cpu_jobs == 1 else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // cpu_jobs))}

    def launch(job):
        device = devices.get()
        try:
            if job.done:  # by another process over the same folder since this one started
                logger.info(f"{job.label}: done meanwhile, skipped")
                return None
            env = dict(os.environ)
            # The jobs import the ser_adv_brain this process imports (train.py's folder, not the cwd, is on their path).
            env["PYTHONPATH"] = os.pathsep.join(p for p in [PACKAGE_ROOT, env.get("PYTHONPATH")] if p)
            env.update(job.environment)
            env = {**threads, **env}
            if device is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(device)
            state = "resumed" if os.path.exists(job.log_file) else "started"
            logger.info(f"{job.label}: {state}" + ("" if device is None else f" on GPU {device}"))
            os.makedirs(os.path.dirname(job.log_file), exist_ok=True)
            started = time.monotonic()
            with open(job.log_file, "a", encoding="utf-8") as log:
                code = subprocess.call(list(job.command), stdout=log, stderr=subprocess.STDOUT, env=env)
            took = f"{(time.monotonic() - started) / 60:.1f} min"
            if code != 0 or not job.done:
                logger.error(f"{job.label}: failed after {took} (exit code {code}); see {job.log_file}")
                return job.label
            logger.info(f"{job.label}: done in {took}")
            return None
        finally:
            devices.put(device)

    todo = [job for job in jobs if not job.done]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(slots)) as pool:
        return [label for label in pool.map(launch, todo) if label]


def run_grid(runs, train_script, overrides, gpus=(), cpu_jobs=1):
    """Trains every unfinished run of a grid (``run_jobs``); returns the labels of the failed ones."""
    return run_jobs([training_job(run, train_script, overrides) for run in runs], gpus, cpu_jobs)
