"""The pretrained interface refuses what training refuses: missing, unreadable, NaN, silent and too short audio."""

import csv
import os

import numpy as np
import pytest
import soundfile
import torch

from ser_adv_brain.data.validation import audio_problem, decode_facts
from ser_adv_brain.interface import EmotionRecognizer, UnusableAudioError


@pytest.fixture(scope="module")
def recognizer(trained, tmp_path_factory):
    folder = os.path.join(trained["out"], "interface")
    return EmotionRecognizer.from_hparams(source=folder, savedir=str(tmp_path_factory.mktemp("pretrained")))


@pytest.fixture(scope="module")
def speech(trained):
    """A test clip of the run, as float samples and its rate."""
    with open(os.path.join(trained["out"], "test.csv"), newline="", encoding="utf-8") as f:
        wav = next(csv.DictReader(f))["wav"]
    return soundfile.read(wav, dtype="float32")


def write(path, samples, rate=16000):
    soundfile.write(path, np.asarray(samples, dtype=np.float32), rate, subtype="FLOAT")
    return str(path)


def refusal(recognizer, path):
    """The fault for which ``classify_file`` refuses ``path``; the error must name the file."""
    with pytest.raises(UnusableAudioError) as caught:
        recognizer.classify_file(path)
    assert list(caught.value.faults) == [path] and str(caught.value).startswith(path)
    return caught.value.faults[path]


def test_nan_and_inf_samples_are_refused_naming_the_file(recognizer, speech, tmp_path):
    audio, rate = speech
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        damaged = audio.copy()
        damaged[len(audio) // 2] = value  # one bad sample among speech
        fault = refusal(recognizer, write(tmp_path / f"{name}.wav", damaged, rate))
        assert fault.kind == "non-finite" and "NaN or Inf" in str(fault)


def test_digital_silence_is_refused(recognizer, tmp_path):
    fault = refusal(recognizer, write(tmp_path / "silence.wav", np.zeros(16000)))
    assert fault.kind == "silent" and "all zeros" in str(fault)


def test_clips_shorter_than_one_analysis_window_at_the_model_rate_are_refused(recognizer, tmp_path):
    rng = np.random.default_rng(0)
    fault = refusal(recognizer, write(tmp_path / "100.wav", rng.uniform(-1, 1, 100)))
    assert fault.kind == "too short" and "100 samples" in str(fault) and "(n_fft = 512)" in str(fault)
    # n_fft = 512 samples at 16 kHz: 511 is refused, 512 is classified; at 8 kHz each sample counts twice.
    assert refusal(recognizer, write(tmp_path / "511.wav", rng.uniform(-1, 1, 511))).kind == "too short"
    assert refusal(recognizer, write(tmp_path / "255_8k.wav", rng.uniform(-1, 1, 255), 8000)).kind == "too short"
    for name, samples, rate in (("512.wav", 512, 16000), ("256_8k.wav", 256, 8000)):
        _, _, index, _ = recognizer.classify_file(write(tmp_path / name, rng.uniform(-1, 1, samples), rate))
        assert index.shape == (1,)


def test_unreadable_files_are_refused_with_the_readers_words(recognizer, tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00garbage" * 10)
    fault = refusal(recognizer, str(garbage))
    assert fault.kind == "unreadable" and "cannot be decoded" in str(fault) and "Format not recognised" in str(fault)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert refusal(recognizer, str(empty)).kind == "unreadable"


def test_missing_files_are_named(recognizer, tmp_path, monkeypatch):
    for path in (str(tmp_path / "no_such.wav"), str(tmp_path / "no_such_folder" / "clip.wav")):
        with pytest.raises(FileNotFoundError, match="no such audio file") as caught:
            recognizer.classify_file(path)
        assert str(caught.value).startswith(path) and "System error" not in str(caught.value)
    monkeypatch.chdir(tmp_path)  # a relative name is a local file too, not something to download
    with pytest.raises(FileNotFoundError, match="^clip.wav: no such audio file"):
        recognizer.classify_file("clip.wav")


def test_a_batch_reports_every_bad_row(recognizer, speech):
    audio, rate = speech
    length = min(len(audio), rate)
    good = torch.from_numpy(audio[:length])
    batch = good.repeat(5, 1)
    batch[1, 10] = float("nan")
    batch[2] = 0.0
    batch[4, length // 2 :] = 0.0  # zero padding after a valid signal, cut off by its relative length
    wav_lens = torch.tensor([1.0, 1.0, 1.0, 100 / length, 0.5])  # row 3: its first 100 samples only
    for method in (recognizer.classify_batch, recognizer.attack_batch):
        with pytest.raises(UnusableAudioError) as caught:
            method(batch, wav_lens, sample_rate=rate)
        error = caught.value
        assert error.rows == [1, 2, 3]
        assert [error.faults[row].kind for row in error.rows] == ["non-finite", "silent", "too short"]
        assert "rows [1, 2, 3] in a batch of 5" in str(error) and "row 2 is all zeros" in str(error)
    # The good rows, on their own, are classified as they would be one by one.
    together = recognizer.classify_batch(batch[[0, 4]], wav_lens[[0, 4]], sample_rate=rate)[0]
    alone = recognizer.classify_batch(batch[4:5, : length // 2], sample_rate=rate)[0]
    torch.testing.assert_close(together[1], alone[0])


def test_interface_and_training_refuse_the_same_files(recognizer, speech, tmp_path):
    """Training's check (``audio_problem``) and the interface's give the same verdict, in the same words."""
    audio, rate = speech
    rng = np.random.default_rng(1)
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    files = [
        write(tmp_path / "speech.wav", audio, rate),
        write(tmp_path / "nan.wav", np.r_[audio, np.nan], rate),
        write(tmp_path / "silence.wav", np.zeros(8000)),
        write(tmp_path / "short.wav", rng.uniform(-1, 1, 200), 8000),  # 400 samples at 16 kHz
        write(tmp_path / "long_enough.wav", rng.uniform(-1, 1, 300), 16000 * 300 // 512),
        str(tmp_path / "garbage.wav"),
    ]
    verdicts = {}
    for path in files:
        problem = audio_problem(decode_facts(path), 16000, 512)
        try:
            recognizer.classify_file(path)
            verdicts[os.path.basename(path)] = problem is None
        except UnusableAudioError as error:
            verdicts[os.path.basename(path)] = problem is not None and problem.startswith(error.faults[path].what)
    assert verdicts == {os.path.basename(path): True for path in files}
