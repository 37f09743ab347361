"""Recipes and their yaml files agree, as SpeechBrain's consistency tests require.

- every hparams file is listed in a ``tests/recipes/*.csv`` row, in SpeechBrain's format,
  whose files exist and whose checks name the outputs to expect;
- every top-level yaml key passes SpeechBrain's ``check_yaml_vs_script``
  (``tests/utils/check_yaml.py`` in SpeechBrain's repository): it is referenced
  earlier in the yaml, is a run option, or is read in the recipe's *script file*
  itself (the package does not count);
- every module the Brains use is declared in each yaml's ``modules``.
"""

import os
import re

import pytest
import ruamel.yaml
import torch
from helpers import (
    RECIPE_CSV_COLUMNS,
    RECIPE_HPARAMS_FILES,
    REPO_ROOT,
    SECOND_STAGE_FILES,
    files_to_check,
    recipe_csv_files,
    recipe_rows,
    takes_waveform_file,
)
from speechbrain.utils.run_opts import RunOptions

ROWS = recipe_rows()
IDS = [recipe_id for recipe_id, _ in ROWS]


def read(path):
    with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
        return f.read()


def load_yaml_tree(path):
    """The yaml as written (tags kept, nothing instantiated)."""
    return ruamel.yaml.YAML().load(read(path))


def keys_speechbrain_checks(path):
    """The top-level keys that SpeechBrain's check wants the script to read, found as it finds them.

    Line by line: a top-level ``key:`` is a candidate unless its line carries
    ``!apply`` or ``!!`` (or a ``Pretrainer``); every ``<name>`` on a ``!ref``
    line removes a candidate defined above it.
    """
    candidates = []
    for line in read(path).splitlines():
        if len(line) < 1 or line.startswith("#") or "speechbrain.utils.parameter_transfer.Pretrainer" in line:
            continue
        if ":" in line and not line[0].isspace() and "!apply" not in line and "!!" not in line:
            candidates.append(line[: line.index(":")])
        if "!ref" in line:
            for name in re.findall(r"<([^>\[]*)", line):
                if name in candidates:
                    candidates.remove(name)
    return candidates


def read_in_script(key, script):
    """SpeechBrain's patterns for a hyperparameter read in a script."""
    patterns = (f'["{key}"]', f"hparams.{key}", f"modules.{key}", f'attr(self.hparams, "{key}"', f'hparams.get("{key}"')
    return any(pattern in script for pattern in patterns)


def test_csv_files_have_speechbrains_columns():
    assert recipe_csv_files(), "no tests/recipes/*.csv"
    for path in recipe_csv_files():
        with open(path, encoding="utf-8") as f:
            assert f.readline().strip().split(",") == RECIPE_CSV_COLUMNS, path


def test_every_hparams_file_is_listed_in_a_recipe_csv():
    listed = {row["Hparam_file"] for _, row in ROWS}
    assert RECIPE_HPARAMS_FILES, "no hparams files found"
    unlisted = sorted(set(RECIPE_HPARAMS_FILES) - listed)
    assert not unlisted, f"hparams files without a row in tests/recipes/*.csv: {unlisted}"


@pytest.mark.parametrize("row", [row for _, row in ROWS], ids=IDS)
def test_recipe_row_names_existing_files_and_checks_outputs(row):
    for column in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
        assert os.path.isfile(os.path.join(REPO_ROOT, row[column])), f"{column} {row[column]!r} does not exist"
    assert row["test_debug_flags"], "no test_debug_flags"
    assert files_to_check(row["test_debug_checks"]), "test_debug_checks has no file_exists=[...]"
    # tests/integration/test_recipes.py checks file_exists only: any other check would be silently skipped.
    assert re.sub(r"file_exists=\[.*?\]", "", row["test_debug_checks"]).strip() == ""


@pytest.mark.parametrize("row", [row for _, row in ROWS], ids=IDS)
def test_every_yaml_key_is_read_by_the_script_as_speechbrain_checks(row):
    script = read(row["Script_file"])
    run_options = set(RunOptions().as_dict())
    unused = [
        key
        for key in keys_speechbrain_checks(row["Hparam_file"])
        if key not in run_options and not read_in_script(key, script)
    ]
    assert not unused, (
        f"{row['Hparam_file']}: keys not used in {row['Script_file']} (SpeechBrain's check_yaml_vs_script): {unused}"
    )


@pytest.mark.parametrize("hparams_file", sorted(SECOND_STAGE_FILES))
def test_every_second_stage_yaml_key_is_read_by_its_command(hparams_file):
    """The recipes' check, for a yaml that a package command reads: a key nothing reads is a trap."""
    script = "".join(read(path) for path in SECOND_STAGE_FILES[hparams_file])
    unused = [key for key in keys_speechbrain_checks(hparams_file) if not read_in_script(key, script)]
    assert not unused, f"{hparams_file}: keys not used in {SECOND_STAGE_FILES[hparams_file]}: {unused}"


# The Brain's feature modules, which it uses only for a model that takes the log-Mel features.
FEATURE_MODULES = {"compute_features", "normalizer"}


@pytest.mark.parametrize("row", [row for _, row in ROWS], ids=IDS)
def test_modules_the_brains_use_are_declared(row):
    brain_source = read(os.path.join("ser_adv_brain", "training", "brain.py")) + read(row["Script_file"])
    used = set(re.findall(r"self\.modules\.(\w+)", brain_source)) - set(dir(torch.nn.ModuleDict))
    if takes_waveform_file(row["Hparam_file"]):
        used -= FEATURE_MODULES
    declared = set(load_yaml_tree(row["Hparam_file"])["modules"])
    assert used and used <= declared, f"{row['Hparam_file']}: modules {sorted(used - declared)} are not declared"


# The keys that say which experiment a file is (corpus, model, length of training); every other
# key two files share must hold the same value in both, so that the files cannot drift apart.
EXPERIMENT_KEYS = {
    "experiment_name",
    "output_folder",
    "data_folder",
    "split_ratio",
    "fold",
    "n_frames",
    "model",
    "number_of_epochs",
    "select_checkpoint",
    "warmup_steps",
    "encoder",  # a self-supervised model's encoder and where its weights come from
    "encoder_source",
}
# Keys that hold the kind of training (the file name after the model: single, vanilla, raw_noise, ...).
TRAINING_KEYS = {
    "objective",
    "training_step",
    "training_attack",
    "smoothing",
    "smoothing_noise",
    "smoothing_sigma",
    "wav_augment",  # the training batch's augmentation (rooms, noise)
}


def as_written(node):
    """A yaml node as comparable data: values, tags (``!new:...``, ``!ref``) and nesting; no comments."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, dict):
        value = {key: as_written(child) for key, child in node.items()}
    elif isinstance(node, list):
        value = [as_written(child) for child in node]
    else:
        value = str(getattr(node, "value", node))
    return (tag, value) if tag else value


def test_hparams_files_do_not_drift_apart():
    """The nine DEMoS files and the EmoDB ones: the same features, attacks, suite, optimiser,
    loaders, logger and checkpointer (with its exact-resume guarantees), key for key. The files
    of models that take the waveform (self-supervised encoders) agree among themselves: their
    audio settings, attacks and optimiser are their own."""
    seen = {}  # (key, kind or None, input) -> (file, value)
    drifted = []
    for path in RECIPE_HPARAMS_FILES:
        kind = os.path.splitext(os.path.basename(path))[0].split("_", 1)[-1]
        waveform = takes_waveform_file(path)
        for key, node in load_yaml_tree(path).items():
            if key in EXPERIMENT_KEYS:
                continue
            slot = (key, kind if key in TRAINING_KEYS else None, waveform)
            first = seen.setdefault(slot, (path, as_written(node)))
            if first[1] != as_written(node):
                drifted.append(f"{key}: {path} differs from {first[0]}")
    assert not drifted, "hparams files drifted apart:\n" + "\n".join(drifted)
