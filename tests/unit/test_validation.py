"""Bad inputs are caught before training, all at once, each naming its file or row and the fix."""

import csv
import logging
import os
import re
import shutil

import helpers
import numpy as np
import pytest
import soundfile
from demos_prepare import prepare_demos
from helpers import RecipeBrain
from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.data import validation
from ser_adv_brain.data.dataio import manifests_of
from ser_adv_brain.data.validation import DataValidationError, read_manifest, validate_inputs
from ser_adv_brain.runs import checked_datasets
from ser_adv_brain.training.brain import build_brain


@pytest.fixture
def corpus(resume_corpus, tmp_path):
    """A private copy of a small corpus (14 training clips), free to damage."""
    return shutil.copytree(resume_corpus, tmp_path / "demos")


def load(output_folder, corpus=None, name="cnn4_vanilla", **overrides):
    """A yaml file at ``TINY`` size, with the manifests of ``corpus`` prepared if given."""
    return helpers.prepared_hparams(name, corpus, **{**helpers.tiny(name), "output_folder": output_folder, **overrides})


@pytest.fixture
def hparams(corpus, tmp_path):
    return load(tmp_path / "run", corpus)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows, columns=None):
    columns = columns or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def problems_of(call, *args, **kwargs):
    with pytest.raises(DataValidationError) as info:
        call(*args, **kwargs)
    return info.value.problems, str(info.value)


# ---------------------------------------------------------------- data folder and file names


def test_missing_data_folder_says_where_to_point(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; point --data_folder"):
        prepare_demos(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_empty_data_folder(tmp_path):
    (tmp_path / "DEMOS").mkdir()
    problems, message = problems_of(prepare_demos, str(tmp_path), str(tmp_path / "out"))
    assert "contains no .wav files" in message and len(problems) == 1


def test_folder_without_demos_names(corpus, tmp_path):
    for index, path in enumerate(sorted(corpus.rglob("*.wav"))):
        if index < 3:
            path.rename(path.with_name(f"take_{index}.wav"))
        else:
            path.unlink()
    problems, message = problems_of(prepare_demos, str(corpus), str(tmp_path / "out"))
    assert "none of its 3 .wav files has a DEMoS name" in message
    assert len(problems) == 4  # the folder, then each file


def test_every_unknown_emotion_code_is_listed(corpus, tmp_path):
    bad = []
    for path, code in zip(sorted(corpus.rglob("*.wav"))[:2], ("xyz", "abc")):
        target = path.with_name(path.stem[:-6] + code + path.stem[-3:] + ".wav")
        path.rename(target)
        bad.append(target)
    problems, message = problems_of(prepare_demos, str(corpus), str(tmp_path / "out"))
    assert [problem.where for problem in problems] == [str(path) for path in sorted(bad)]
    assert "unknown DEMoS emotion code 'xyz'" in message and "unknown DEMoS emotion code 'abc'" in message
    assert "skip_bad_files: True" in message


def test_skip_bad_files_leaves_misnamed_files_out(corpus, tmp_path, caplog):
    path = sorted(corpus.rglob("*.wav"))[0]
    path.rename(path.with_name(path.stem[:-6] + "xyz" + path.stem[-3:] + ".wav"))
    with caplog.at_level(logging.WARNING):
        prepare_demos(str(corpus), str(tmp_path / "out"), skip_bad_files=True)
    assert "leaving out 1 file(s)" in caplog.text
    ids = {row["ID"] for split in ("train", "valid", "test") for row in read_rows(tmp_path / "out" / f"{split}.csv")}
    assert path.stem not in ids and len(ids) == len(list(corpus.rglob("*.wav"))) - 1


# ---------------------------------------------------------------- audio


def damage_audio(corpus):
    """Damages one file per kind of problem; returns stem -> expected words of its message.

    The files have distinct emotions, so every class keeps training data when they are skipped.
    """
    one_per_emotion = {}
    for path in sorted(corpus.rglob("*.wav")):
        one_per_emotion.setdefault(path.stem[-6:-3], path)
    wavs = list(one_per_emotion.values())
    damage = {
        "cannot be decoded": lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10),
        "has no samples": lambda p: soundfile.write(p, np.zeros(0, np.float32), 16000),
        "all zeros": lambda p: soundfile.write(p, np.zeros(8000, np.float32), 16000),
        "NaN or Inf": lambda p: soundfile.write(
            p, np.r_[np.ones(8000), np.nan].astype(np.float32), 16000, subtype="FLOAT"
        ),
        "shorter than one analysis window": lambda p: soundfile.write(
            p, np.ones(200, np.float32), 8000
        ),  # 400 samples at 16 kHz,
    }
    damage["cannot be decoded "] = lambda p: p.write_bytes(b"")  # zero bytes: no header at all
    for path, write in zip(wavs, damage.values()):
        write(path)
    return {path.stem: words.strip() for path, words in zip(wavs, damage)}


def test_every_bad_audio_file_is_reported_at_once(corpus, tmp_path):
    expected = damage_audio(corpus)  # before preparation, which must get through it
    hparams = load(tmp_path / "run", corpus)
    problems, message = problems_of(validate_inputs, hparams)
    assert {problem.row_id: problem.what for problem in problems}.keys() == expected.keys()
    for problem in problems:
        assert expected[problem.row_id] in problem.what
        assert " line " in problem.where and problem.row_id in problem.where
    assert "(n_fft = 512)" in message and "skip_bad_files: True" in message
    assert (tmp_path / "run" / "save" / "data_problems.txt").read_text().count("\n") == len(expected)


def test_recipe_stops_before_training(corpus, tmp_path):
    """The recipe checks its data (``checked_datasets``) before it builds the Brain."""
    expected = damage_audio(corpus)
    hparams = load(tmp_path / "run", corpus)
    with pytest.raises(DataValidationError) as info:
        checked_datasets(hparams, manifests_of(hparams), hparams["n_frames"])
    assert len(info.value.problems) == len(expected)
    assert not list((tmp_path / "run" / "save").glob("CKPT*"))


def test_skip_bad_files_trains_without_them(corpus, tmp_path, caplog):
    expected = damage_audio(corpus)
    hparams = load(tmp_path / "run", corpus, skip_bad_files=True)
    with caplog.at_level(logging.WARNING):
        datasets = checked_datasets(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, {"noprogressbar": True}, RecipeBrain)
    brain.fit_normalizer(datasets["train"], hparams["test_dataloader_options"])
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["dataloader_options"],
        valid_loader_kwargs=hparams["test_dataloader_options"],
    )
    assert f"leaving out {len(expected)} row(s)" in caplog.text
    kept = {row_id for dataset in datasets.values() for row_id in dataset.data_ids}
    assert kept and not kept & expected.keys()
    assert len(kept) == len(list(corpus.rglob("*.wav"))) - len(expected)


def test_scan_is_cached_and_notices_changes(hparams, monkeypatch):
    decoded = []
    decode = validation.decode_facts
    monkeypatch.setattr(validation, "decode_facts", lambda path: decoded.append(path) or decode(path))
    validate_inputs(hparams)
    assert len(decoded) == 28
    decoded.clear()
    validate_inputs(hparams)
    assert decoded == []  # unchanged files are not decoded again
    wav = read_rows(hparams["train_annotation"])[0]["wav"]
    soundfile.write(wav, np.zeros(8000, np.float32), 16000)
    problems, _ = problems_of(validate_inputs, hparams)
    assert decoded == [wav] and "all zeros" in problems[0].what


def test_unreadable_cache_is_rebuilt(hparams):
    validate_inputs(hparams)
    cache = os.path.join(hparams["save_folder"], "audio_scan.json")
    with open(cache, "w", encoding="utf-8") as f:
        f.write('{"half a')
    assert validate_inputs(hparams) == {"train": [], "valid": [], "test": []}


# ---------------------------------------------------------------- manifests


def test_every_manifest_problem_is_reported_at_once(hparams, tmp_path):
    train, valid, test = (read_rows(hparams[f"{s}_annotation"]) for s in ("train", "valid", "test"))
    train.append(dict(train[0]))  # duplicate ID, line 16
    valid[0]["emo"] = "boredom"  # unknown label, line 2
    valid[1]["wav"] = str(tmp_path / "gone.wav")  # missing file, line 3
    test[0]["ID"] = train[1]["ID"]  # an ID in two splits
    test[1]["spk_id"] = train[2]["spk_id"]  # a speaker in two splits
    test[2]["duration"] = "long"
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        write_rows(hparams[f"{split}_annotation"], rows)
    problems, message = problems_of(validate_inputs, hparams)
    found = "\n".join(str(problem) for problem in problems)
    assert "train.csv line 16" in found and "duplicate ID, already on line 2" in found
    assert "valid.csv line 2" in found and "unknown label 'boredom'" in found
    assert "valid.csv line 3" in found and "gone.wav does not exist" in found
    assert f"ID {train[1]['ID']}: is in the train and test splits" in found
    assert f"speaker {train[2]['spk_id']}: is in the train and test splits" in found
    assert "duration 'long' is not a number" in found
    assert len(problems) == 6


def test_missing_columns_and_manifests(hparams):
    rows = read_rows(hparams["valid_annotation"])
    write_rows(hparams["valid_annotation"], rows, columns=["ID", "duration", "wav"])
    os.remove(hparams["test_annotation"])
    problems, message = problems_of(validate_inputs, hparams)
    assert "missing column(s) ['emo', 'spk_id']" in message
    assert "the test manifest does not exist" in message and "test_annotation" in message
    assert len(problems) == 2


def test_a_missing_manifest_outside_a_recipe_gets_no_recipes_remedy(tmp_path):
    """``attack-interface`` reads manifests it did not prepare: no data preparation nor ``*_annotation`` to fix."""
    rows, [problem] = read_manifest(str(tmp_path / "gone.csv"), "test")
    assert rows == [] and problem.what == "the test manifest does not exist"


def test_empty_split(hparams):
    with open(hparams["test_annotation"], "w", encoding="utf-8") as f:
        f.write("ID,duration,wav,emo,spk_id,gender\n")
    _, message = problems_of(validate_inputs, hparams)
    assert "the test manifest has no usable rows; the split leaves this set empty" in message


def test_classes_must_match_n_classes(hparams):
    rows = [row for row in read_rows(hparams["train_annotation"]) if row["emo"] != "anger"]
    write_rows(hparams["train_annotation"], rows)
    _, message = problems_of(validate_inputs, hparams)
    assert "has 6 emotion classes" in message and "n_classes is 7" in message
    assert "unknown label 'anger'" in message  # dev and test still have it


def test_labels_must_match_an_earlier_runs_encoder(hparams):
    with open(os.path.join(hparams["save_folder"], "label_encoder.txt"), "w", encoding="utf-8") as f:
        f.write("'anger' => 0\n'joy' => 1\n================\n'starting_index' => 0\n")
    _, message = problems_of(validate_inputs, hparams)
    assert "unknown label 'fear'" in message and "label_encoder.txt (delete it" in message


# ---------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"batch_size": 0}, "batch_size: must be an integer >= 1, got 0"),
        ({"eval_eps": [0.0, -0.02]}, "eval_eps: every eps must be a finite number >= 0, got -0.02"),
        ({"n_frames": 2}, "n_frames: must be an integer >= 3, got 2"),
    ],
)
def test_invalid_hyperparameters_are_reported(tmp_path, corpus, overrides, words):
    hparams = load(tmp_path / "run", corpus, **overrides)
    _, message = problems_of(validate_inputs, hparams)
    assert words in message


def test_model_must_be_a_module(hparams):
    hparams["modules"]["model"] = helpers.TINY  # e.g. !name: instead of !new:
    _, message = problems_of(validate_inputs, hparams)
    assert "model: must be a torch.nn.Module built with !new:" in message


@pytest.mark.parametrize(
    "overrides, error, words",
    [
        ({"attack_eps": -0.1}, ValueError, "eps must be a finite number >= 0, got -0.1"),
        ({"beta": 0.7, "gamma": 0.5}, ValueError, "beta + gamma must be <= 1"),
    ],
)
def test_invalid_attack_and_objective_fail_at_load(tmp_path, overrides, error, words):
    with pytest.raises(error, match=words.replace("+", r"\+")):
        load(tmp_path, name="cnn4_similarity", **overrides)


def test_a_training_attack_of_no_known_domain_names_its_key(tmp_path):
    """The features and the waveform are what a training step can attack; the bare ``Attack`` has no domain."""
    text = helpers.hparams_path("cnn4_pgd").read_text()
    block = re.compile(r"^training_attack: !new:ser_adv_brain.attacks.PGD\n(?:    .*\n)+", re.MULTILINE)
    text = block.sub("training_attack: !new:ser_adv_brain.attacks.Attack {eps: 0.1}\n", text, count=1)
    with pytest.raises(TypeError, match=r"hparams 'training_attack'.* must perturb one of .*with domain None"):
        load_hyperpyyaml(text, {"output_folder": str(tmp_path)})


def test_unknown_model_class_is_named(tmp_path):
    text = helpers.hparams_path("cnn4_single").read_text().replace("models.CNN4", "models.CNN5")
    with pytest.raises(ImportError, match="no such class as ser_adv_brain.models.CNN5"):
        load_hyperpyyaml(text, {"output_folder": str(tmp_path)})


def test_split_that_leaves_a_set_empty(corpus, tmp_path):
    split_file = tmp_path / "split.csv"
    speakers = sorted({path.stem[-9:-7] for path in corpus.rglob("*.wav")})
    split_file.write_text("spk_id,split\n" + "".join(f"{s},train\n" for s in speakers[:-1]) + f"{speakers[-1]},test\n")
    with pytest.raises(ValueError, match=r"leaves \['valid'\] without any utterance"):
        prepare_demos(str(corpus), str(tmp_path / "out"), split_file=str(split_file))
    with pytest.raises(ValueError, match=r"ratio must be > 0"):
        prepare_demos(str(corpus), str(tmp_path / "out2"), split_ratio=[2, 0, 1])
