"""The built-in SYNTHETIC DEMoS-shaped corpus: deterministic, named and laid out like DEMoS."""

import collections
import os

import numpy as np
import pytest
import soundfile

from ser_adv_brain.data.synthetic import EMOTION_CODES, _speaker_voices, generate_synthetic_demos

SMALL = dict(n_speakers=3, utterances_per_emotion=1, neutral_per_speaker=1, min_duration=0.3, max_duration=0.5)


def read_corpus(folder):
    """Relative path -> file bytes, for every wav under ``folder``."""
    files = {}
    for sub in ("DEMOS", "NEU"):
        for name in sorted(os.listdir(os.path.join(folder, sub))):
            with open(os.path.join(folder, sub, name), "rb") as f:
                files[f"{sub}/{name}"] = f.read()
    return files


def test_same_seed_gives_identical_bytes(tmp_path):
    a = read_corpus(generate_synthetic_demos(str(tmp_path / "a"), seed=5, **SMALL))
    b = read_corpus(generate_synthetic_demos(str(tmp_path / "b"), seed=5, **SMALL))
    assert len(a) == 3 * (7 + 1)
    assert a == b


def test_other_seed_gives_other_audio(tmp_path):
    a = read_corpus(generate_synthetic_demos(str(tmp_path / "a"), seed=5, **SMALL))
    b = read_corpus(generate_synthetic_demos(str(tmp_path / "b"), seed=6, **SMALL))
    assert a.keys() == b.keys()  # the naming does not depend on the seed
    assert sum(a[name] != b[name] for name in a) == len(a)


def test_existing_corpus_is_not_regenerated(tmp_path):
    folder = generate_synthetic_demos(str(tmp_path / "c"), seed=5, **SMALL)
    path = os.path.join(folder, "DEMOS", sorted(os.listdir(os.path.join(folder, "DEMOS")))[0])
    before = os.stat(path).st_mtime_ns
    generate_synthetic_demos(folder, seed=99, **SMALL)
    assert os.stat(path).st_mtime_ns == before


def test_too_few_speakers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="n_speakers"):
        generate_synthetic_demos(str(tmp_path / "d"), n_speakers=2)


def test_layout_and_naming_follow_demos(tiny_corpus, demos_prepare):
    emotional = sorted(os.listdir(os.path.join(tiny_corpus, "DEMOS")))
    neutral = sorted(os.listdir(os.path.join(tiny_corpus, "NEU")))
    assert len(emotional) == 6 * 7 * 2 and len(neutral) == 6
    parsed = [demos_prepare.parse_demos_stem(os.path.splitext(n)[0]) for n in emotional]
    assert {p["emo"] for p in parsed} == {demos_prepare.EMOTION_CODES[c] for c in EMOTION_CODES}
    assert len({p["emo"] for p in parsed}) == 7
    assert {demos_prepare.parse_demos_stem(n[:-4])["emo"] for n in neutral} == {"neutral"}
    genders = {p["spk_id"]: p["gender"] for p in parsed}
    assert sorted(collections.Counter(genders.values()).items()) == [("f", 3), ("m", 3)]
    # Every speaker has every emotion, and both NP and PR utterances exist.
    assert len({(p["spk_id"], p["emo"]) for p in parsed}) == 6 * 7
    assert {n[:2] for n in emotional} == {"NP"}  # with 2 per emotion, only index 2 mod 3 is PR
    # Stems look like NP_m_02_rab04b.
    assert all(len(os.path.splitext(n)[0]) == len("NP_m_02_rab04b") for n in emotional + neutral)


def test_prototypical_tags(tmp_path):
    folder = generate_synthetic_demos(
        str(tmp_path / "pr"),
        n_speakers=3,
        utterances_per_emotion=3,
        neutral_per_speaker=0,
        min_duration=0.2,
        max_duration=0.3,
        seed=1,
    )
    names = os.listdir(os.path.join(folder, "DEMOS"))
    assert sum(n.startswith("PR_") for n in names) == 3 * 7
    assert sum(n.startswith("NP_") for n in names) == 2 * 3 * 7


def test_audio_format_and_emotion_cues(tiny_corpus):
    """16 kHz mono clips of the asked length; anger is louder than sadness, as acted speech is."""
    rms = collections.defaultdict(list)
    for name in os.listdir(os.path.join(tiny_corpus, "DEMOS")):
        audio, rate = soundfile.read(os.path.join(tiny_corpus, "DEMOS", name))
        assert rate == 16000 and audio.ndim == 1
        assert 0.6 * 16000 <= len(audio) <= 1.0 * 16000
        assert np.abs(audio).max() <= 1.0
        rms[os.path.splitext(name)[0][-6:-3]].append(np.sqrt(np.mean(audio**2)))
    assert np.mean(rms["rab"]) > 2 * np.mean(rms["tri"])


def test_the_recipes_default_corpus_is_the_documented_one(yaml_hparams):
    """The README's built-in corpus: 14 speakers (7 F, 7 M), 7 emotions plus neutral, 420 clips of
    1.5 to 3 s (the sizes, from the yaml and the generator's defaults; generating it takes 15 s)."""
    import inspect

    defaults = {
        k: p.default
        for k, p in inspect.signature(generate_synthetic_demos).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for name in ("cnn4_single", "vgg16_vanilla", "resnet50_similarity"):
        options = {**defaults, **yaml_hparams(name)["synthetic_corpus"]}
        assert options["n_speakers"] == 14 and len(EMOTION_CODES) == 7
        assert options["n_speakers"] * (7 * options["utterances_per_emotion"] + options["neutral_per_speaker"]) == 420
        assert (options["min_duration"], options["max_duration"]) == (1.5, 3.0)
    genders = [voice["gender"] for voice in _speaker_voices(14, np.random.default_rng(0))]
    assert genders.count("f") == genders.count("m") == 7
