"""What the tests share besides fixtures (those live in ``conftest.py``): the one tiny configuration,
the repository root, loading a yaml file as a recipe does, and tiny runs of the recipes as users type them."""

import csv
import glob
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import ruamel.yaml
import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references
from speechbrain.dataio.encoder import CategoricalEncoder

from ser_adv_brain.data.dataio import dataio_prep, manifests_of
from ser_adv_brain.evaluation.progress import BatchProgress
from ser_adv_brain.models import takes_waveform
from ser_adv_brain.training.brain import build_brain

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMOS_TRAIN = REPO_ROOT / "recipes" / "DEMoS" / "train.py"
EMODB_SAMPLES = REPO_ROOT / "tests" / "samples" / "emodb" / "wav"  # 42 EmoDB-named synthetic clips, 6 speakers
# Their 2 women and 4 men make at most 4 speaker folds (the yaml's 5 would leave one empty); fold 0 tests
# 03 and 08 on dev speakers 09 and 10, as on the whole corpus.
EMODB_SAMPLE_FOLDS = {"n_folds": 4}
KILLED_RUN = REPO_ROOT / "tests" / "integration" / "killed_run.py"
# Second-stage yaml files, read by a command of the package on a trained output folder, not by a
# recipe (no recipe row): file -> that command's module and the Brain it hands the yaml to.
SECOND_STAGE_FILES = {
    "hparams/detector.yaml": ("ser_adv_brain/commands/detector.py", "ser_adv_brain/training/detector_brain.py")
}
# The recipes' yaml files, relative to the repository root.
RECIPE_HPARAMS_FILES = sorted(
    {
        str(path.relative_to(REPO_ROOT))
        for pattern in ("hparams/*.yaml", "recipes/*/hparams/*.yaml")
        for path in REPO_ROOT.glob(pattern)
    }
    - set(SECOND_STAGE_FILES)
)


def recipe_brain_class(script):
    """The Brain subclass of a recipe's ``train.py``, imported as a module (its main block does not run)."""
    spec = importlib.util.spec_from_file_location(f"{os.path.basename(os.path.dirname(script))}_train", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EmotionRecognitionBrain


# What the DEMoS recipe trains with; Brains built in the tests are of this class.
RecipeBrain = recipe_brain_class(DEMOS_TRAIN)

# The one tiny configuration: sizes only, so any of the shipped yaml files runs in seconds through the
# code paths users run. Every attack of the suite that ends each run still runs, at one budget per threat
# model instead of three (the suite costs more than tiny training). Tests that need more (epochs to resume
# into, a model that learns) derive theirs from it with explicit overrides, each saying why.
TINY = {
    "base_channels": 2,
    "n_frames": 32,
    "batch_size": 4,
    "number_of_epochs": 1,
    "suite_budgets": {"features_linf": [0.1], "waveform_snr": [20]},
}
# The one tiny corpus (built-in synthetic DEMoS shape): 6 speakers (3 f, 3 m, 2 per split), 2 utterances
# per emotion and 1 neutral each: 90 short clips, 30 of them for training.
TINY_CORPUS = {
    "n_speakers": 6,
    "utterances_per_emotion": 2,
    "neutral_per_speaker": 1,
    "min_duration": 0.6,
    "max_duration": 1.0,
    "seed": 7,
}

# The smallest runs that clearly learn (best dev UAR .55 to .64 where chance is 1/7, over the kernel settings
# and seeds measured, in about 10 s of CPU): 3 clips per emotion, no neutral ones, 12 epochs at a higher
# learning rate and twice the width and frames. Their dev UAR goes up and down.
LEARNING_CORPUS = {
    **TINY_CORPUS,
    "utterances_per_emotion": 3,
    "neutral_per_speaker": 0,
    "min_duration": 0.8,
    "max_duration": 1.2,
    "seed": 1,
}
LEARNING = {**TINY, "base_channels": 4, "n_frames": 64, "batch_size": 8, "number_of_epochs": 12, "lr": 0.005}

# Resume tests: 3 epochs, so a run can be killed in epoch 1 or 2 and resume into the next; 4 speakers with
# one clip per emotion (14 training clips: 4 steps an epoch), so every kill point is reached in seconds.
RESUME_CORPUS = {
    **TINY_CORPUS,
    "n_speakers": 4,
    "utterances_per_emotion": 1,
    "neutral_per_speaker": 0,
    "min_duration": 0.4,
    "max_duration": 0.8,
    "seed": 1,
}
RESUME = {**TINY, "number_of_epochs": 3, "seed": 7}
EVERY_STEP = {"ckpt_interval_minutes": 0, "ckpt_interval_steps": 1}  # run options: an intra-epoch checkpoint a step


def flags(**overrides):
    """``--key=value`` command-line flags of a recipe."""
    return [f"--{key}={value}" for key, value in overrides.items()]


def corpus_flag(corpus):
    """``--synthetic_corpus={...}``: the recipe generates this corpus itself when it gets no --data_folder."""
    return "--synthetic_corpus={" + ", ".join(f"{k}: {v}" for k, v in corpus.items()) + "}"


def hparams_path(hparams_file):
    """A bare name is ``hparams/<name>.yaml`` (DEMoS); anything else is relative to the repository root."""
    name = hparams_file if hparams_file.endswith(".yaml") else f"{hparams_file}.yaml"
    return REPO_ROOT / hparams_file if "/" in hparams_file else REPO_ROOT / "hparams" / name


def recipe_script(hparams_file):
    """The ``train.py`` that runs a yaml file: DEMoS's for ``hparams/``, else the recipe's own."""
    path = hparams_path(hparams_file)
    return DEMOS_TRAIN if path.parent == REPO_ROOT / "hparams" else path.parents[1] / "train.py"


# The tiny random encoders of the self-supervised recipes (tests/samples/ssl/make_tiny_encoders.py), by family.
TINY_ENCODERS = REPO_ROOT / "tests" / "samples" / "ssl"


def yaml_tag(hparams_file, key):
    """The ``!new:`` tag of a yaml key as written (``ser_adv_brain.models.CNN4``), nothing instantiated."""
    with open(hparams_path(hparams_file), encoding="utf-8") as f:
        return ruamel.yaml.YAML().load(f)[key].tag.value.split(":", 1)[1]


def takes_waveform_file(hparams_file):
    """Whether the yaml file's model takes the waveform (its class's ``input_domain``), read without building it."""
    module, name = yaml_tag(hparams_file, "model").rsplit(".", 1)
    return takes_waveform(getattr(importlib.import_module(module), name))


def encoder_family(hparams_file):
    """``wav2vec2``, ``hubert`` or ``wavlm``: the module of the yaml's encoder wrapper (its tiny encoder's folder)."""
    return yaml_tag(hparams_file, "encoder").rsplit(".", 2)[-2]


def is_adversarial(hparams_file):
    """The single-training yaml files have no adversarial term, hence no ``warmup_steps`` key."""
    return not hparams_path(hparams_file).stem.endswith("_single")


def tiny(hparams_file):
    """``TINY`` for a yaml file, and no warm-up for the adversarial ones; a self-supervised model gets its
    tiny random encoder, and waveform budgets only (it has no features, nor their ``base_channels``)."""
    if takes_waveform_file(hparams_file):
        sizes = {key: value for key, value in TINY.items() if key != "base_channels"}
        sizes["suite_budgets"] = {"waveform_snr": TINY["suite_budgets"]["waveform_snr"]}
        sizes["encoder_source"] = str(TINY_ENCODERS / encoder_family(hparams_file))
    else:
        sizes = dict(TINY)
    return {**sizes, **({"warmup_steps": 0} if is_adversarial(hparams_file) else {})}


def resume_sizes(hparams_file):
    """``RESUME`` for a yaml file; adversarial training starts after 3 clean steps, within epoch 1."""
    return {**RESUME, **({"warmup_steps": 3} if is_adversarial(hparams_file) else {})}


def load_hparams(hparams_file, *cli_flags, **overrides):
    """The hparams a recipe run with these command-line flags sees, with ``overrides`` on top.

    Writes nothing: ``save_hyperparams`` writes ``hyperparams.yaml`` where a run is made in-process.
    """
    path = hparams_path(hparams_file)
    _, _, cli_overrides = sb.parse_arguments([str(path), *cli_flags])
    with open(path, encoding="utf-8") as f:
        return load_hyperpyyaml(f, {**(yaml.safe_load(cli_overrides) or {}), **overrides})


def save_hyperparams(hparams_file, overrides):
    """Writes ``<output_folder>/hyperparams.yaml`` as ``create_experiment_directory`` does (the export
    reads it), without reconfiguring logging under pytest's capture."""
    os.makedirs(overrides["output_folder"], exist_ok=True)
    with open(hparams_path(hparams_file), encoding="utf-8") as f:
        resolved = resolve_references(f, overrides)
    with open(os.path.join(overrides["output_folder"], "hyperparams.yaml"), "w", encoding="utf-8") as w:
        w.write(resolved.getvalue())


def prepared_hparams(hparams_file, data_folder=None, **overrides):
    """A yaml file's hparams loaded in this process with its ``hyperparams.yaml`` written, and the
    DEMoS manifests of ``data_folder`` prepared in its output folder when given."""
    from demos_prepare import prepare_demos  # conftest puts the DEMoS recipe on the path

    overrides = {key: str(value) if isinstance(value, pathlib.Path) else value for key, value in overrides.items()}
    hparams = load_hparams(hparams_file, **overrides)
    save_hyperparams(hparams_file, overrides)
    if data_folder is not None:
        prepare_demos(str(data_folder), hparams["output_folder"], seed=hparams["seed"])
    return hparams


def subprocess_env():
    """This checkout first on the path; one thread, as tiny tensors gain nothing from more and the cores are shared."""
    path = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}


def run_command(args, timeout=600, cwd=REPO_ROOT):
    """Runs a command from the repository root, with this checkout importable; fails with its output."""
    args = [str(arg) for arg in args]
    done = subprocess.run(args, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
        )
    return done


def run_recipe(hparams_file, *cli_flags, launcher=(sys.executable,)):
    """``python <recipe>/train.py <hparams> <flags>`` (or under another launcher); its console output."""
    done = run_command([*launcher, recipe_script(hparams_file), hparams_path(hparams_file), *cli_flags])
    return done.stdout + done.stderr


def evaluation_brain(hparams_file, *cli_flags):
    """A single-process Brain over a finished run's manifests and checkpoints, and its datasets."""
    hparams = load_hparams(hparams_file, *cli_flags, "--skip_prep=True")
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, {"device": "cpu", "noprogressbar": True}, RecipeBrain)
    return brain, datasets, hparams


def capture_eval_stats(brain):
    """Makes ``brain`` append every evaluation stage's statistics to the returned list."""
    captured, eval_stats = [], brain.eval_stats

    def recording_eval_stats(stage_loss):
        stats = eval_stats(stage_loss)
        captured.append(stats)
        return stats

    brain.eval_stats = recording_eval_stats
    return captured


def entry_hparams(output_folder, experiment_name, emotions=("anger", "sadness")):
    """The hyperparameters a benchmark entry reads of a run (``reports.entry``), for entries made by hand in a
    folder without a run (its corpus and protocol then read as unknown)."""
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(emotions)
    encoder.expect_len(len(emotions))
    return {
        "output_folder": str(output_folder),
        "label_encoder": encoder,
        "experiment_name": experiment_name,
        "seed": 1234,
        "model": torch.nn.Identity(),
    }


def markdown_rows(text):
    """The cells of every row of the markdown tables in ``text`` (their separator rows left out), stripped."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line[1:-1].split("|")])
    return rows


def valid_uars(train_log):
    """Dev UAR of each epoch, from a ``train_log.txt`` text."""
    return [float(m) for m in re.findall(r"^epoch: \d+,.* valid UAR: ([0-9.e+-]+)", train_log, re.M)]


# ---------------------------------------------------------------- killed and resumed runs


def train_command(output_folder, data_folder, hparams_file="cnn4_vanilla", kill=None, **overrides):
    """The command line of a ``RESUME``-sized run with a checkpoint each step (``kill``: a ``when:N`` spec,
    see ``killed_run.py``)."""
    script = [KILLED_RUN, kill] if kill else [recipe_script(hparams_file)]
    sizes = {**resume_sizes(hparams_file), **EVERY_STEP}
    args = flags(**{**sizes, "output_folder": output_folder, "data_folder": data_folder, **overrides})
    return [sys.executable, *map(str, script), str(hparams_path(hparams_file)), *args, "--noprogressbar"]


def run_training(output_folder, data_folder, **kwargs):
    """Runs a ``RESUME``-sized training in a subprocess; returns the ``CompletedProcess``."""
    return subprocess.run(
        train_command(output_folder, data_folder, **kwargs),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )


def completed_run(folder, data_folder, **kwargs):
    """The output folder of a ``RESUME``-sized run that completed (run once per folder)."""
    folder = pathlib.Path(folder)
    if not (folder / "robustness.csv").exists():
        result = run_training(folder, data_folder, **kwargs)
        assert result.returncode == 0, result.stderr[-3000:]
    return folder


def checkpoints(save_folder):
    """Complete checkpoint folders, oldest first.

    By the time each was saved, as SpeechBrain orders them: not by name, since a name freed by a
    deleted checkpoint is reused by a later one saved within the same second.
    """
    complete = [path for path in pathlib.Path(save_folder).glob("CKPT+*") if (path / "CKPT.yaml").exists()]
    return sorted(complete, key=lambda path: yaml.safe_load((path / "CKPT.yaml").read_text())["unixtime"])


def run_outcome(folder):
    """What two equivalent runs must share: the logs, the robustness table, the final parameters."""
    folder = pathlib.Path(folder)
    latest = checkpoints(folder / "save")[-1]
    return {
        "train_log": (folder / "train_log.txt").read_text(),
        "robustness": (folder / "robustness.csv").read_text(),
        "parameters": {
            name: torch.load(latest / f"{name}.ckpt", weights_only=True)
            for name in ("model", "normalizer", "optimizer")
        },
    }


def assert_same_outcome(first, second):
    assert first["train_log"] == second["train_log"]
    assert first["robustness"] == second["robustness"]
    for name in ("model", "normalizer"):
        state_a, state_b = first["parameters"][name], second["parameters"][name]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), f"{name}.{key} differs"
    assert repr(first["parameters"]["optimizer"]) == repr(second["parameters"]["optimizer"])


# ---------------------------------------------------------------- SpeechBrain's recipe-test format

# speechbrain/tests/recipes/*.csv
RECIPE_CSV_COLUMNS = [
    "Task",
    "Dataset",
    "Script_file",
    "Hparam_file",
    "Data_prep_file",
    "Readme_file",
    "Result_url",
    "HF_repo",
    "test_debug_flags",
    "test_debug_checks",
    "performance",
]


def recipe_csv_files():
    return sorted(glob.glob(str(REPO_ROOT / "tests" / "recipes" / "*.csv")))


def recipe_rows():
    """``(recipe_id, row)`` for every row of every recipe CSV, named as SpeechBrain names them."""
    rows = []
    for path in recipe_csv_files():
        with open(path, newline="", encoding="utf-8") as f:
            for row_id, row in enumerate(csv.DictReader(f, skipinitialspace=True)):
                name = os.path.basename(path)[:-4]
                rows.append((f"{name}_row_{row_id + 2:02d}", {k: (v or "").strip() for k, v in row.items()}))
    return rows


def files_to_check(check_str):
    """The paths of a ``file_exists=[a,b,...]`` check, as SpeechBrain's recipe tests read it."""
    match = re.search(r"file_exists=\[(.*?)\]", check_str)
    return [name.strip() for name in match.group(1).split(",")] if match else []


class KilledAfter(BatchProgress):
    """Progress whose evaluation is killed once it has recorded ``batches`` batches."""

    def __init__(self, path, identity, batches):
        super().__init__(path, identity)
        self.left = batches

    def record(self, *args):
        super().record(*args)
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt
