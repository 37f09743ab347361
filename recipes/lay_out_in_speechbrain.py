#!/usr/bin/env python3
"""Copies the DEMoS and EmoDB recipes into a SpeechBrain checkout, in SpeechBrain's layout.

    python recipes/lay_out_in_speechbrain.py /path/to/speechbrain

For each corpus, the recipe's files land in
``<speechbrain>/recipes/<corpus>/emotion_recognition/`` (``train.py``,
``hparams/`` with the yaml files its rows run, the data preparation, ``README.md``,
``extra_requirements.txt``) and its rows in
``<speechbrain>/tests/recipes/<corpus>.csv``: this repository's rows, each
path moved to where its file now is. The EmoDB rows' debug runs read the
clips of ``tests/samples/emodb/wav`` and the tiny encoders of ``tests/samples/ssl``,
copied to the same place in the checkout. Every file is copied unchanged; nothing is generated. The recipes
import the ``ser_adv_brain`` package, which must be installed (see
``extra_requirements.txt``). Running it again overwrites the same files.

Then, from the SpeechBrain checkout, SpeechBrain's own checks run on them::

    pytest tests/consistency/test_yaml.py tests/consistency/test_recipe.py tests/consistency/test_docstrings.py
    python -c 'from tests.utils.recipe_tests import run_recipe_tests; \\
        print(run_recipe_tests(filters_fields=["Dataset"], filters=[["DEMoS", "EmoDB"]]))'
"""

import csv
import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "emotion_recognition"
# corpus -> (this repository's files, its hparams folder, the sample folders its debug rows read)
RECIPES = {
    "DEMoS": (
        [
            "recipes/DEMoS/train.py",
            "recipes/DEMoS/demos_prepare.py",
            "recipes/DEMoS/README.md",
            "recipes/DEMoS/extra_requirements.txt",
        ],
        "hparams",
        (),
    ),
    "EmoDB": (
        [
            "recipes/EmoDB/train.py",
            "recipes/EmoDB/emodb_prepare.py",
            "recipes/EmoDB/README.md",
            "recipes/EmoDB/extra_requirements.txt",
        ],
        "recipes/EmoDB/hparams",
        ("tests/samples/emodb", "tests/samples/ssl"),  # the clips; the self-supervised rows' tiny encoders
    ),
}
PATH_COLUMNS = ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file")


def copy(source, destination):
    """Copies one file of this repository (a path relative to it) to ``destination``."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.copyfile(os.path.join(REPO, source), destination)


def lay_out(corpus, speechbrain):
    """Copies one recipe and its CSV rows; returns {path here: path in the checkout}, both relative."""
    files, hparams_folder, samples = RECIPES[corpus]
    recipe_folder = os.path.join("recipes", corpus, TASK)
    moved = {path: os.path.join(recipe_folder, os.path.basename(path)) for path in files}
    csv_path = os.path.join("tests", "recipes", f"{corpus}.csv")
    with open(os.path.join(REPO, csv_path), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    # The recipe's yaml files are those its rows run; second-stage ones (hparams/detector.yaml) belong
    # to commands of the package, not to the recipe.
    for relative in sorted({row["Hparam_file"] for row in rows}):
        if os.path.dirname(os.path.relpath(relative, hparams_folder)).startswith(".."):
            raise ValueError(f"{csv_path} names {relative}, which is not in the {corpus} recipe's {hparams_folder}/")
        moved[relative] = os.path.join(recipe_folder, "hparams", os.path.relpath(relative, hparams_folder))
    for source, destination in moved.items():
        copy(source, os.path.join(speechbrain, destination))
    for folder in samples:
        target = os.path.join(speechbrain, folder)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(os.path.join(REPO, folder), target)

    unknown = [row[column] for row in rows for column in PATH_COLUMNS if row[column] and row[column] not in moved]
    if unknown:
        raise ValueError(f"{csv_path} names files that the {corpus} recipe does not copy: {sorted(set(unknown))}")
    for row in rows:
        row.update({column: moved.get(row[column], row[column]) for column in PATH_COLUMNS})
    with open(os.path.join(speechbrain, csv_path), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return moved


def main(argv):
    if len(argv) != 1 or not os.path.isdir(os.path.join(argv[0], "tests", "recipes")):
        sys.exit(f"usage: python {os.path.relpath(__file__, REPO)} SPEECHBRAIN_CHECKOUT (a folder with tests/recipes/)")
    for corpus in RECIPES:
        moved = lay_out(corpus, argv[0])
        print(
            f"{corpus}: {len(moved)} files in {os.path.join(argv[0], 'recipes', corpus, TASK)}, "
            f"rows in tests/recipes/{corpus}.csv"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
