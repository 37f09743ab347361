"""Property-based tests: stem parsing, manifest reading and the feature pipeline over arbitrary inputs."""

import math
import string

import numpy as np
import pytest
import soundfile
import torch
from demos_prepare import EMOTION_CODES, parse_demos_stem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from speechbrain.dataio.dataio import load_data_csv

from ser_adv_brain.audio.loading import fix_length, frames_to_samples, load_audio
from ser_adv_brain.data.manifests import MANIFEST_COLUMNS, write_manifest
from ser_adv_brain.data.validation import (
    AudioScan,
    audio_problem,
    decode_facts,
    minimum_n_frames,
    read_manifest,
    row_problems,
)
from ser_adv_brain.features import FeatureNormalizer, LogMel

SMALL = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ---------------------------------------------------------------- stems

demos_stems = st.tuples(
    st.sampled_from(["NP", "PR"]),
    st.sampled_from("mf"),
    st.integers(0, 99),
    st.sampled_from(sorted(EMOTION_CODES)),
    st.integers(0, 99),
    st.sampled_from(string.ascii_lowercase),
)


@SMALL
@given(demos_stems)
def test_demos_stems_parse_to_their_parts(parts):
    prefix, gender, speaker, code, number, letter = parts
    info = parse_demos_stem(f"{prefix}_{gender}_{speaker:02d}_{code}{number:02d}{letter}")
    assert info == {
        "emo": EMOTION_CODES[code],
        "spk_id": f"{speaker:02d}",
        "gender": gender,
        "prototypical": prefix == "PR",
    }


def is_demos_stem(stem):
    """The stem shape ``NP_m_02_rab04b`` written out character by character, ASCII digits and letters only."""
    letters, digits = set(string.ascii_lowercase), set(string.digits)
    return (
        len(stem) == 14
        and stem[:2].upper() in ("NP", "PR")
        and stem[2] == stem[4] == stem[7] == "_"
        and stem[3].lower() in "mf"
        and set(stem[5:7] + stem[11:13]) <= digits
        and stem[8:11] in EMOTION_CODES
        and stem[13].lower() in letters
    )


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.text(max_size=20)
    | demos_stems.map(lambda p: f"{p[0]}_{p[1]}_{p[2]:02d}_{p[3]}{p[4]:02d}{p[5]}").flatmap(
        lambda stem: st.integers(0, len(stem)).map(lambda i: stem[:i] + "٣" + stem[i + 1 :])
    )
)
def test_any_other_name_is_refused_with_a_value_error(stem):
    """Arbitrary names, and DEMoS stems with a character swapped for a non-ASCII digit: a name is
    parsed if and only if it has the DEMoS shape, and a refusal names it."""
    try:
        info = parse_demos_stem(stem)
    except ValueError as error:
        assert repr(stem) in str(error)
        assert not is_demos_stem(stem)
        return
    assert is_demos_stem(stem)
    assert info == {
        "emo": EMOTION_CODES[stem[8:11]],
        "spk_id": stem[5:7],
        "gender": stem[3].lower(),
        "prototypical": stem[:2].upper() == "PR",
    }


@pytest.mark.parametrize("stem", ["NP_m_02_rab0٣b", "NP_m_0٣_rab04b", "NP_m_02_rab04b_", "xNP_m_02_rab04b"])
def test_non_ascii_digits_and_extra_characters_are_refused(stem):
    with pytest.raises(ValueError, match=repr(stem)):
        parse_demos_stem(stem)


# ---------------------------------------------------------------- manifests

field_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)


@pytest.fixture(scope="module")
def wav_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "ok.wav"
    soundfile.write(path, np.sin(np.arange(8000) / 7.0).astype(np.float32), 16000)
    return str(path)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return AudioScan(str(tmp_path_factory.mktemp("scan") / "audio_scan.json"))


def verdict(path, scan):
    """Rows and problems as the validation sees them."""
    rows, problems = read_manifest(str(path), "train")
    return rows, problems + row_problems(str(path), "train", rows, scan, 16000, 512)


@SMALL
@given(records=st.lists(st.fixed_dictionaries({c: field_text for c in ("ID", "emo", "spk_id", "gender")}), max_size=6))
def test_written_manifests_read_back_as_speechbrain_reads_them(records, wav_file, scan, tmp_path_factory):
    """Whatever the IDs and labels hold (commas, quotes, newlines, spaces, '$'): validation accepts exactly
    what SpeechBrain's reader reads back unchanged, and names every duplicate."""
    path = tmp_path_factory.getbasetemp() / "written.csv"
    records = [{**record, "wav": wav_file, "duration": "0.5"} for record in records]
    write_manifest(path, records)
    rows, problems = verdict(path, scan)
    assert [line for line, _ in rows] == sorted(line for line, _ in rows)
    if problems:
        return
    loaded = load_data_csv(str(path))
    assert list(loaded) == [row["ID"] for _, row in rows]
    for _, row in rows:
        assert {k: v for k, v in loaded[row["ID"]].items() if k != "duration"} == {
            k: v for k, v in row.items() if k not in ("ID", "duration")
        }
    ids = [row["ID"] for _, row in rows]
    assert len(set(ids)) == len(ids)


raw_rows = st.tuples(field_text, st.sampled_from(["0.5", "", " 1", "x"]), field_text, field_text, field_text)


@SMALL
@given(rows=st.lists(raw_rows, max_size=5))
def test_any_csv_text_is_either_reported_or_readable(rows, wav_file, scan, tmp_path_factory):
    """Fields joined by commas without quoting, so that commas, quotes and newlines in them break
    the rows in every way: validation never crashes, and what it accepts SpeechBrain reads."""
    path = tmp_path_factory.getbasetemp() / "raw.csv"
    body = [",".join([row_id, duration, wav_file, *rest]) for row_id, duration, *rest in rows]
    path.write_text(",".join(MANIFEST_COLUMNS) + "\n" + "\n".join(body) + "\n", encoding="utf-8")
    rows, problems = verdict(path, scan)
    if not problems:
        assert list(load_data_csv(str(path))) == [row["ID"] for _, row in rows]


# ---------------------------------------------------------------- feature pipeline

RATES = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000]


@SMALL
@given(
    length=st.integers(1, 12000),
    rate=st.sampled_from(RATES),
    channels=st.integers(1, 4),
    amplitude=st.sampled_from([0.0, 1e-30, 1e-6, 0.01, 1.0, 1e3, 1e30]),
    n_frames=st.integers(minimum_n_frames(512, 256), 40),
    random_crop=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_feature_pipeline_gives_finite_features_of_the_right_shape(
    length, rate, channels, amplitude, n_frames, random_crop, seed, tmp_path_factory
):
    path = tmp_path_factory.getbasetemp() / "pipeline.wav"
    samples = np.random.default_rng(seed).uniform(-1, 1, (length, channels)) * amplitude
    soundfile.write(path, samples.astype(np.float32), rate, subtype="FLOAT")

    wav = load_audio(str(path), 16000)
    assert wav.dim() == 1 and wav.shape[0] == math.ceil(length * 16000 / rate)
    num_samples = frames_to_samples(n_frames, 256)
    sig = fix_length(wav, num_samples, random_crop=random_crop)
    assert sig.shape == (num_samples,)
    feats = LogMel(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)(sig[None])
    assert feats.shape == (1, n_frames, 64) and torch.isfinite(feats).all()
    normalizer = FeatureNormalizer(64)
    normalizer.fit([feats])
    assert torch.isfinite(normalizer(feats)).all()

    # The pre-training check refuses exactly the silent and the too short files.
    problem = audio_problem(decode_facts(str(path)), 16000, 512)
    if amplitude == 0.0:
        assert "all zeros" in problem
    elif wav.shape[0] < 512:
        assert "shorter than one analysis window" in problem
    else:
        assert problem is None
