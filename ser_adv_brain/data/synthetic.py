"""A small SYNTHETIC emotional-speech corpus laid out and named exactly like DEMoS.

DEMoS is EULA-restricted, so the toolkit ships this stand-in as its built-in
default data: the same folders (``DEMOS/``, ``NEU/``), the same file stems
(``NP_m_02_rab04b``: prototypicality, gender, speaker, emotion code,
utterance tag), the 7 emotions plus neutral, male and female speakers.

The voices are additive harmonic synthesis: a glottal source whose F0
follows an intonation contour, shaped by moving formants (a vowel per
syllable) and a syllable envelope, with breath noise. Emotions differ the
way acted emotions do -- F0 level, range and contour, energy, speaking rate
and voice quality (spectral tilt, jitter, breathiness) -- each drawn with
per-utterance spread so that classes overlap and speakers differ. It is
synthetic speech: results on it say nothing about real emotional speech.
"""

import logging
import os

import numpy as np
import soundfile

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# Relative to a speaker's neutral voice:
# f0 (level factor), range (semitones of accent excursion), slope (semitones over
# the utterance), rate (syllables/s), energy (dB), tilt (source roll-off exponent),
# jitter (relative F0 noise), breath (noise-to-voice ratio).
EMOTION_PROFILES = {
    "rab": dict(f0=1.35, range=5.0, slope=-2.0, rate=5.2, energy=6.0, tilt=0.9, jitter=0.015, breath=0.03),
    "dis": dict(f0=0.90, range=2.0, slope=-3.0, rate=3.2, energy=0.0, tilt=1.4, jitter=0.030, breath=0.06),
    "pau": dict(f0=1.40, range=3.0, slope=1.0, rate=5.5, energy=-1.0, tilt=1.5, jitter=0.040, breath=0.20),
    "col": dict(f0=0.92, range=1.5, slope=-2.5, rate=3.4, energy=-5.0, tilt=1.7, jitter=0.012, breath=0.15),
    "gio": dict(f0=1.30, range=6.0, slope=1.5, rate=4.8, energy=3.0, tilt=1.1, jitter=0.010, breath=0.04),
    "tri": dict(f0=0.85, range=1.0, slope=-4.0, rate=2.8, energy=-6.0, tilt=1.8, jitter=0.015, breath=0.18),
    "sor": dict(f0=1.25, range=4.5, slope=6.0, rate=4.5, energy=2.0, tilt=1.2, jitter=0.012, breath=0.05),
    "neu": dict(f0=1.00, range=2.0, slope=-1.5, rate=4.0, energy=0.0, tilt=1.3, jitter=0.008, breath=0.04),
}
EMOTION_CODES = tuple(code for code in EMOTION_PROFILES if code != "neu")

# Vowel formants (F1, F2, F3) in Hz for an adult male vocal tract.
VOWELS = np.array(
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])


def _speaker_voices(n_speakers, rng):
    """Gender, F0 and vocal-tract scale of each speaker (alternating genders)."""
    speakers = []
    for index in range(n_speakers):
        gender = "f" if index % 2 else "m"
        base_f0 = rng.normal(210.0, 18.0) if gender == "f" else rng.normal(115.0, 12.0)
        tract = rng.normal(1.17, 0.04) if gender == "f" else rng.normal(1.0, 0.04)
        speakers.append(dict(id=index + 1, gender=gender, f0=base_f0, tract=tract))
    return speakers


def _jittered(profile, rng):
    """One utterance's prosody: the emotion profile with per-utterance spread."""
    return dict(
        f0=profile["f0"] * np.exp(rng.normal(0.0, 0.07)),
        range=max(0.3, profile["range"] * np.exp(rng.normal(0.0, 0.25))),
        slope=profile["slope"] + rng.normal(0.0, 1.2),
        rate=profile["rate"] * np.exp(rng.normal(0.0, 0.12)),
        energy=profile["energy"] + rng.normal(0.0, 2.0),
        tilt=profile["tilt"] + rng.normal(0.0, 0.15),
        jitter=profile["jitter"] * np.exp(rng.normal(0.0, 0.3)),
        breath=profile["breath"] * np.exp(rng.normal(0.0, 0.3)),
    )


def synthesize_utterance(speaker, emotion, duration, rng, sample_rate=SAMPLE_RATE):
    """Synthesises one utterance of ``duration`` seconds as a float32 array in [-1, 1]."""
    p = _jittered(EMOTION_PROFILES[emotion], rng)
    n = int(duration * sample_rate)
    t = np.arange(n) / sample_rate

    # Syllables: onsets at the speaking rate, each a raised-cosine voiced nucleus.
    n_syll = max(1, int(round(duration * p["rate"])))
    edges = np.sort(rng.uniform(0.0, 1.0, n_syll + 1))
    edges = (edges - edges[0]) / (edges[-1] - edges[0] + 1e-9) * duration * 0.92 + 0.04
    syll = np.clip(np.searchsorted(edges, t) - 1, 0, n_syll - 1)
    start, end = edges[syll], edges[np.minimum(syll + 1, n_syll)]
    phase_in_syll = np.clip((t - start) / np.maximum(end - start, 1e-3), 0.0, 1.0)
    envelope = np.sin(np.pi * phase_in_syll) ** 0.6 * (phase_in_syll < 0.85)

    # Intonation: declination/rise over the utterance plus an accent per syllable.
    accents = rng.uniform(-0.3, 1.0, n_syll) * p["range"]
    semitones = p["slope"] * t / duration + accents[syll] * np.sin(np.pi * phase_in_syll)
    f0 = speaker["f0"] * p["f0"] * 2.0 ** (semitones / 12.0)
    f0 *= 1.0 + p["jitter"] * np.repeat(rng.normal(size=n // 80 + 1), 80)[:n]
    phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate

    # Formants: one vowel per syllable, smoothed, scaled by the speaker's vocal tract.
    formants = VOWELS[rng.integers(0, len(VOWELS), n_syll)][syll] * speaker["tract"]
    kernel = np.hanning(801) / np.hanning(801).sum()
    formants = np.stack([np.convolve(formants[:, i], kernel, mode="same") for i in range(3)], 1)

    # Additive harmonics below 7 kHz, weighted by source tilt and the formant resonances.
    voice = np.zeros(n)
    for k in range(1, int(7000 / f0.min()) + 1):
        freq = k * f0
        gain = k ** (-p["tilt"]) * (freq < 7000)
        resonance = sum(1.0 / (1.0 + ((freq - formants[:, i]) / FORMANT_BANDWIDTHS[i]) ** 2) for i in range(3))
        voice += gain * (0.05 + resonance) * np.sin(k * phase)
    voice /= np.abs(voice).max() + 1e-9

    breath = p["breath"] * rng.normal(size=n)
    signal = (voice + breath) * envelope * 10.0 ** (p["energy"] / 20.0)
    signal += 0.002 * rng.normal(size=n)  # recording noise floor
    return (0.3 * signal / 2.0).clip(-1.0, 1.0).astype(np.float32)


def generate_synthetic_demos(
    folder,
    n_speakers=14,
    utterances_per_emotion=4,
    neutral_per_speaker=2,
    min_duration=1.5,
    max_duration=3.0,
    seed=1234,
):
    """Writes the synthetic DEMoS-shaped corpus under ``folder`` (skipped if it is already there).

    Arguments
    ---------
    folder : str
        Receives ``DEMOS/*.wav`` (emotional) and ``NEU/*.wav`` (neutral), 16 kHz mono.
    n_speakers : int
        At least 3, alternating male and female.
    utterances_per_emotion : int
        Per speaker and emotion; every third one is tagged prototypical (``PR``).
    neutral_per_speaker : int
    min_duration, max_duration : float
        Clip lengths in seconds, drawn uniformly.
    seed : int
        The corpus is a deterministic function of its arguments.

    Returns
    -------
    str
        ``folder``.
    """
    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        logger.info(f"Synthetic DEMoS-shaped corpus already in {folder}, not regenerated.")
        return folder
    if n_speakers < 3:
        raise ValueError(f"n_speakers must be >= 3 for a train/dev/test split, got {n_speakers}")
    rng = np.random.default_rng(seed)
    plan = []
    for speaker in _speaker_voices(n_speakers, rng):
        for emotion in EMOTION_CODES:
            for index in range(utterances_per_emotion):
                plan.append((speaker, emotion, index, "DEMOS"))
        for index in range(neutral_per_speaker):
            plan.append((speaker, "neu", index, "NEU"))
    for sub in ("DEMOS", "NEU"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for speaker, emotion, index, sub in plan:
        prefix = "PR" if index % 3 == 2 else "NP"
        tag = f"{index // 26 + 1:02d}{chr(ord('a') + index % 26)}"
        stem = f"{prefix}_{speaker['gender']}_{speaker['id']:02d}_{emotion}{tag}"
        duration = rng.uniform(min_duration, max_duration)
        audio = synthesize_utterance(speaker, emotion, duration, rng)
        soundfile.write(os.path.join(folder, sub, stem + ".wav"), audio, SAMPLE_RATE, subtype="PCM_16")
    with open(marker, "w", encoding="utf-8") as f:
        f.write(f"seed={seed} speakers={n_speakers} files={len(plan)}\n")
    logger.info(
        f"Wrote a SYNTHETIC DEMoS-shaped corpus ({len(plan)} files, {n_speakers} speakers) "
        f"to {folder}: built-in default data, not real emotional speech."
    )
    return folder
