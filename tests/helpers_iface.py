"""Shared by the DDP, inference and recipe tests: tiny runs of the recipes, as users type them."""

import csv
import glob
import os
import re
import subprocess
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.dataio import dataio_prep
from ser_adv_brain.recipe import build_brain
from ser_adv_brain.synthetic import generate_synthetic_demos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS_TRAIN = os.path.join(REPO, "recipes", "DEMoS", "train.py")

# Small enough for seconds on 2 CPU cores; the yaml files themselves are unchanged.
TINY_CORPUS = {"n_speakers": 6, "utterances_per_emotion": 2, "neutral_per_speaker": 0, "seed": 1}
TINY_FLAGS = [
    "--base_channels=4",
    "--n_frames=100",
    "--number_of_epochs=1",
    "--batch_size=4",
    "--eval_eps=[0.0, 0.1]",
    "--noprogressbar",
]


def make_tiny_corpus(folder):
    """The built-in synthetic DEMoS-shaped corpus, at test size."""
    return generate_synthetic_demos(folder, **TINY_CORPUS)


def run_command(args, timeout=300):
    """Runs a command from the repository root, with this checkout importable; fails with its output."""
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
    return done


def run_recipe(hparams_file, *flags, launcher=(sys.executable,), script=DEMOS_TRAIN):
    """``python recipes/DEMoS/train.py <hparams> <flags>`` (or under another launcher)."""
    return run_command([*launcher, script, os.path.join(REPO, hparams_file), *flags])


def load_recipe_hparams(hparams_file, *flags):
    """The hparams dict a recipe run with these command-line flags sees."""
    _, _, overrides = sb.parse_arguments([os.path.join(REPO, hparams_file), *flags])
    with open(os.path.join(REPO, hparams_file), encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def evaluation_brain(hparams_file, *flags):
    """A single-process Brain over a finished run's manifests and checkpoints, and its datasets."""
    hparams = load_recipe_hparams(hparams_file, *flags, "--skip_prep=True")
    datasets, hparams["label_encoder"] = dataio_prep(hparams)
    brain = build_brain(hparams, {"device": "cpu", "noprogressbar": True})
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


# SpeechBrain's recipe-test format (speechbrain/tests/recipes/*.csv).
RECIPE_CSV_COLUMNS = [
    "Task", "Dataset", "Script_file", "Hparam_file", "Data_prep_file", "Readme_file",
    "Result_url", "HF_repo", "test_debug_flags", "test_debug_checks", "performance",
]  # fmt: skip


def recipe_csv_files():
    return sorted(glob.glob(os.path.join(REPO, "tests", "recipes", "*.csv")))


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
