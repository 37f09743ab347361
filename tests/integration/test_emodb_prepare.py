"""EmoDB recipe: name parsing, the leave-speakers-out split, and a tiny end-to-end run.

The corpus is faked in ``tmp_path``: EmoDB-named noise files at EmoDB's
original-copy rate (22,050 Hz), so the pipeline's resampling is exercised too.
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from helpers import REPO_ROOT, TINY, flags, subprocess_env

RECIPE = os.path.join(REPO_ROOT, "recipes", "EmoDB")
sys.path.insert(0, RECIPE)
from emodb_prepare import EMOTION_LETTERS, parse_emodb_stem, prepare_emodb  # noqa: E402

SPEAKERS = ["03", "08", "09", "10", "11", "13"]


@pytest.fixture(scope="module")
def fake_emodb(tmp_path_factory):
    """Six speakers, one 0.5 s utterance per emotion each, named like EmoDB."""
    folder = tmp_path_factory.mktemp("emodb") / "wav"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for speaker in SPEAKERS:
        for i, letter in enumerate(EMOTION_LETTERS):
            wav = 0.1 * rng.standard_normal(11025) * (1 + i)
            soundfile.write(str(folder / f"{speaker}a0{i}{letter}a.wav"), wav.astype("float32"), 22050)
    return str(folder)


def read_manifest(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_parse_emodb_stem():
    assert parse_emodb_stem("08b10Wc") == {
        "spk_id": "08",
        "gender": "f",
        "text": "b10",
        "emo": "anger",
        "version": "c",
    }
    assert [parse_emodb_stem(f"03a01{letter}a")["emo"] for letter in "WLEAFTN"] == [
        "anger",
        "boredom",
        "disgust",
        "fear",
        "happiness",
        "sadness",
        "neutral",
    ]
    with pytest.raises(ValueError, match="unknown EmoDB emotion letter 'X'"):
        parse_emodb_stem("03a01Xa")
    with pytest.raises(ValueError, match="unknown EmoDB speaker '04'"):
        parse_emodb_stem("04a01Fa")
    with pytest.raises(ValueError, match="not an EmoDB stem"):
        parse_emodb_stem("NP_m_02_rab04b")


def test_prepare_with_explicit_speakers(fake_emodb, tmp_path):
    save = str(tmp_path / "out")
    prepare_emodb(fake_emodb, save, test_speakers=["03", "08"], valid_speakers=["09", "10"])
    splits = {s: read_manifest(os.path.join(save, f"{s}.csv")) for s in ("train", "valid", "test")}
    assert {r["spk_id"] for r in splits["test"]} == {"03", "08"}
    assert {r["spk_id"] for r in splits["valid"]} == {"09", "10"}
    assert {r["spk_id"] for r in splits["train"]} == {"11", "13"}
    for records in splits.values():
        assert {r["emo"] for r in records} == set(EMOTION_LETTERS.values())
        assert all(float(r["duration"]) == pytest.approx(0.5) for r in records)
    assert {r["ID"]: r["gender"] for r in splits["test"]}["08a00Wa"] == "f"
    with open(os.path.join(save, "speaker_split.csv"), encoding="utf-8") as f:
        assert "03,test" in f.read().split()

    # Same options: skipped (the manifests are left as they are); other options: prepared anew.
    stamp = os.path.getmtime(os.path.join(save, "train.csv"))
    os.utime(os.path.join(save, "train.csv"), (stamp - 100, stamp - 100))
    prepare_emodb(fake_emodb, save, test_speakers=["03", "08"], valid_speakers=["09", "10"])
    assert os.path.getmtime(os.path.join(save, "train.csv")) == stamp - 100
    prepare_emodb(fake_emodb, save, test_speakers=["03"], valid_speakers=["11"])
    assert {r["spk_id"] for r in read_manifest(os.path.join(save, "train.csv"))} == {"08", "09", "10", "13"}


def test_prepare_a_speaker_fold(fake_emodb, tmp_path):
    """3 folds of one woman and one man: fold 2 tests 11 and 13, on dev speakers 03 and 08 (the next fold, wrapping)."""
    save = tmp_path / "fold2"
    prepare_emodb(fake_emodb, str(save), fold=2, n_folds=3)
    speakers = {s: {r["spk_id"] for r in read_manifest(save / f"{s}.csv")} for s in ("train", "valid", "test")}
    assert speakers == {"test": {"11", "13"}, "valid": {"03", "08"}, "train": {"09", "10"}}
    assert "# EmoDB: speaker fold 2 of 3" in (save / "data_summary.md").read_text()
    with open(save / "speaker_split.csv", newline="", encoding="utf-8") as f:
        assert {r["spk_id"]: r["split"] for r in csv.DictReader(f)} == {
            "03": "valid",
            "08": "valid",
            "09": "train",
            "10": "train",
            "11": "test",
            "13": "test",
        }
    with pytest.raises(ValueError, match=r"Give either fold \(2\) or test_speakers/valid_speakers"):
        prepare_emodb(
            fake_emodb, str(tmp_path / "both"), fold=2, n_folds=3, test_speakers=["03"], valid_speakers=["09"]
        )


def test_prepare_random_split_and_errors(fake_emodb, tmp_path):
    prepare_emodb(fake_emodb, str(tmp_path / "random"), split_ratio=(2, 2, 2), seed=3)
    speakers = [
        {r["spk_id"] for r in read_manifest(tmp_path / "random" / f"{s}.csv")} for s in ("train", "valid", "test")
    ]
    assert sorted(set.union(*speakers)) == SPEAKERS and sum(map(len, speakers)) == len(SPEAKERS)

    with pytest.raises(ValueError, match=r"test_speakers names speaker\(s\) \['05'\]"):
        prepare_emodb(fake_emodb, str(tmp_path / "e1"), test_speakers=["05"], valid_speakers=["09"])
    with pytest.raises(ValueError, match=r"\['09'\] are in both"):
        prepare_emodb(fake_emodb, str(tmp_path / "e2"), test_speakers=["09"], valid_speakers=["09"])
    with pytest.raises(ValueError, match="Give both test_speakers and valid_speakers"):
        prepare_emodb(fake_emodb, str(tmp_path / "e3"), test_speakers=["03"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_emodb(str(tmp_path / "nowhere"), str(tmp_path / "e4"))


def test_emodb_vanilla_recipe_end_to_end(fake_emodb, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        os.path.join(RECIPE, "train.py"),
        os.path.join(RECIPE, "hparams", "cnn4_vanilla.yaml"),
        f"--data_folder={fake_emodb}",
        f"--output_folder={out}",
        # 2 epochs: adversarial from step 3 on; 3 folds of one woman and one man (fold 0: test 03 and 08)
        *flags(**{**TINY, "number_of_epochs": 2, "warmup_steps": 2, "n_folds": 3}),
    ]
    result = subprocess.run(
        command, cwd=str(tmp_path), env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_manifest(out / "robustness.csv")
    assert [(r["split"], float(r["eps"])) for r in rows] == [
        (split, eps) for split in ("valid", "test") for eps in (0.0, 0.02, 0.04, 0.06, 0.08, 0.10)
    ]
    assert all(0.0 <= float(r["UAR"]) <= 1.0 and int(r["n"]) == 14 for r in rows)
    log = (out / "train_log.txt").read_text()
    assert "epoch: 2" in log and "train fake_loss" in log
    assert "Epoch loaded: 2 " in log  # the yaml's select_checkpoint: final


def test_select_checkpoint_is_checked():
    from ser_adv_brain.training.checkpoints import selection_key

    assert selection_key("best_dev") == "UAR" and selection_key("final") is None
    with pytest.raises(ValueError, match="select_checkpoint must be one of"):
        selection_key("last")
