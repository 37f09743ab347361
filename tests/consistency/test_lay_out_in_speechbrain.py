"""``recipes/lay_out_in_speechbrain.py``: the recipes copied into a SpeechBrain checkout's layout."""

import csv
import filecmp
import os
import runpy

import pytest
from helpers import REPO_ROOT

COMMAND = os.path.join(REPO_ROOT, "recipes", "lay_out_in_speechbrain.py")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """An empty stand-in for a SpeechBrain checkout (its ``tests/recipes`` folder), with the recipes laid in."""
    root = tmp_path_factory.mktemp("speechbrain")
    os.makedirs(root / "tests" / "recipes")
    runpy.run_path(COMMAND, run_name="lay_out")["main"]([str(root)])
    return root


@pytest.mark.parametrize("corpus", ["DEMoS", "EmoDB"])
def test_every_row_names_copies_in_speechbrains_layout(checkout, corpus):
    with open(checkout / "tests" / "recipes" / f"{corpus}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(REPO_ROOT, "tests", "recipes", f"{corpus}.csv"), newline="", encoding="utf-8") as f:
        originals = list(csv.DictReader(f))
    assert len(rows) == len(originals)
    folder = f"recipes/{corpus}/emotion_recognition/"
    for row, original in zip(rows, originals):
        for column in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
            assert row[column].startswith(folder), row[column]
            # A copy, byte for byte: nothing is generated.
            assert filecmp.cmp(checkout / row[column], os.path.join(REPO_ROOT, original[column]), shallow=False)
        assert row["test_debug_flags"] == original["test_debug_flags"]
    assert (checkout / folder / "extra_requirements.txt").is_file()
    hparams = sorted(os.listdir(checkout / folder / "hparams"))
    assert hparams == sorted(os.path.basename(row["Hparam_file"]) for row in rows)


def test_emodb_debug_rows_find_their_clips(checkout):
    clips = sorted(os.listdir(checkout / "tests" / "samples" / "emodb" / "wav"))
    assert clips == sorted(os.listdir(os.path.join(REPO_ROOT, "tests", "samples", "emodb", "wav")))
    for family in ("wav2vec2", "hubert", "wavlm"):  # the self-supervised rows' tiny encoders
        assert (checkout / "tests" / "samples" / "ssl" / family / "model.safetensors").is_file()
