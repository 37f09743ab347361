"""Recipes and their yaml files agree, in the spirit of SpeechBrain's ``check_yaml_vs_script``.

- every hparams file is listed in a ``tests/recipes/*.csv`` row, in SpeechBrain's format,
  whose files exist and whose checks name the outputs to expect;
- every top-level yaml key is used: by another key of the yaml (``!ref``), by
  the recipe's script or data preparation, by the package, or as a run option;
- every module the Brains use is declared in each yaml's ``modules``.
"""

import glob
import os
import re

import pytest
import ruamel.yaml
import torch
from speechbrain.utils.run_opts import RunOptions

from helpers_iface import RECIPE_CSV_COLUMNS, REPO, files_to_check, recipe_csv_files, recipe_rows

ROWS = recipe_rows()
IDS = [recipe_id for recipe_id, _ in ROWS]
HPARAMS_FILES = sorted(
    os.path.relpath(path, REPO)
    for pattern in ("hparams/**/*.yaml", "recipes/*/hparams/**/*.yaml")
    for path in glob.glob(os.path.join(REPO, pattern), recursive=True)
)
# Second-stage yaml files, run by a command of the package on a trained output folder, not by a recipe:
# no recipe row; tests/test_detector.py checks their keys.
SECOND_STAGE_FILES = {"hparams/detector.yaml"}
PACKAGE_SOURCES = sorted(glob.glob(os.path.join(REPO, "ser_adv_brain", "**", "*.py"), recursive=True))


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return f.read()


def load_yaml_tree(path):
    """The yaml as written (tags kept, nothing instantiated)."""
    return ruamel.yaml.YAML().load(read(path))


def referenced_keys(node):
    """Top-level keys named in the ``!ref`` / ``!copy`` strings anywhere under ``node``."""
    if str(getattr(node, "tag", "")) in ("!ref", "!copy"):
        return set(re.findall(r"<(\w+)", str(node.value)))
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return set().union(set(), *(referenced_keys(child) for child in children))


def used_in_code(key, sources):
    """SpeechBrain's patterns for a hyperparameter read in Python code."""
    patterns = (f'["{key}"]', f"['{key}']", f"hparams.{key}", f"modules.{key}", f'attr(self.hparams, "{key}"', f'hparams.get("{key}"')
    return any(pattern in source for source in sources for pattern in patterns)


def test_csv_files_have_speechbrains_columns():
    assert recipe_csv_files(), "no tests/recipes/*.csv"
    for path in recipe_csv_files():
        with open(path, encoding="utf-8") as f:
            assert f.readline().strip().split(",") == RECIPE_CSV_COLUMNS, path


def test_every_hparams_file_is_listed_in_a_recipe_csv():
    listed = {row["Hparam_file"] for _, row in ROWS}
    assert HPARAMS_FILES, "no hparams files found"
    unlisted = sorted(set(HPARAMS_FILES) - listed - SECOND_STAGE_FILES)
    assert not unlisted, f"hparams files without a row in tests/recipes/*.csv: {unlisted}"


@pytest.mark.parametrize("row", [row for _, row in ROWS], ids=IDS)
def test_recipe_row_names_existing_files_and_checks_outputs(row):
    for column in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
        assert os.path.isfile(os.path.join(REPO, row[column])), f"{column} {row[column]!r} does not exist"
    assert row["test_debug_flags"], "no test_debug_flags"
    assert files_to_check(row["test_debug_checks"]), "test_debug_checks has no file_exists=[...]"
    # tests/test_recipes.py checks file_exists only: any other check would be silently skipped.
    assert re.sub(r"file_exists=\[.*?\]", "", row["test_debug_checks"]).strip() == ""


@pytest.mark.parametrize("row", [row for _, row in ROWS], ids=IDS)
def test_every_top_level_yaml_key_is_used(row):
    tree = load_yaml_tree(row["Hparam_file"])
    sources = [read(row["Script_file"]), read(row["Data_prep_file"])] + [read(p) for p in PACKAGE_SOURCES]
    run_options = set(RunOptions().as_dict())
    unused = [
        key
        for key in tree
        if not key.startswith("__")  # applied while loading (e.g. __set_seed)
        and key not in referenced_keys(tree)
        and key not in run_options
        and not used_in_code(key, sources)
    ]
    assert not unused, f"{row['Hparam_file']}: keys used neither by the yaml, {row['Script_file']} nor the package: {unused}"


@pytest.mark.parametrize("row", [row for _, row in ROWS], ids=IDS)
def test_modules_the_brains_use_are_declared(row):
    brain_source = read(os.path.join("ser_adv_brain", "brain.py"))
    used = set(re.findall(r"self\.modules\.(\w+)", brain_source)) - set(dir(torch.nn.ModuleDict))
    declared = set(load_yaml_tree(row["Hparam_file"])["modules"])
    assert used and used <= declared, f"{row['Hparam_file']}: modules {sorted(used - declared)} are not declared"
