"""Audio loading (any rate, any channel count -> 16 kHz mono) and fixed-length clips."""

import numpy as np
import pytest
import soundfile
import torch

from ser_adv_brain.audio.loading import fix_length, frames_to_samples, load_audio


def tone(rate, seconds=0.5, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(wav, rate=16000):
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    return np.fft.rfftfreq(len(wav), 1.0 / rate)[spectrum.argmax()]


def test_16k_mono_is_read_as_is(tmp_path):
    path = str(tmp_path / "a.wav")
    soundfile.write(path, tone(16000), 16000, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.shape == (8000,)
    assert torch.allclose(wav, torch.from_numpy(tone(16000)))


@pytest.mark.parametrize(
    "rate, subtype, ext",
    [(8000, "PCM_16", "wav"), (22050, "PCM_24", "flac"), (44100, "FLOAT", "wav"), (48000, "PCM_16", "wav")],
)
def test_other_rates_are_resampled_to_16k(tmp_path, rate, subtype, ext):
    path = str(tmp_path / f"a.{ext}")
    soundfile.write(path, tone(rate), rate, subtype=subtype)
    wav = load_audio(path)
    assert wav.dim() == 1 and wav.shape[0] == pytest.approx(8000, abs=1)
    assert peak_frequency(wav) == pytest.approx(440.0, abs=2.0)  # 2 Hz = the FFT bin of 0.5 s
    assert float(wav.abs().max()) == pytest.approx(0.5, abs=0.02)


def test_channels_are_averaged(tmp_path):
    left = tone(44100)
    stereo = np.stack([left, 0.5 * left], axis=1)
    path = str(tmp_path / "stereo.wav")
    soundfile.write(path, stereo, 44100, subtype="FLOAT")
    wav = load_audio(path)
    reference_path = str(tmp_path / "mono.wav")
    soundfile.write(reference_path, 0.75 * left, 44100, subtype="FLOAT")
    assert wav.dim() == 1
    assert torch.allclose(wav, load_audio(reference_path), atol=1e-6)


def test_other_model_rate(tmp_path):
    path = str(tmp_path / "a.wav")
    soundfile.write(path, tone(16000), 16000)
    assert load_audio(path, sample_rate=8000).shape == (4000,)


def test_short_clips_are_tiled():
    wav = torch.arange(10.0)
    assert torch.equal(fix_length(wav, 25), torch.cat([wav, wav, wav[:5]]))
    assert torch.equal(fix_length(wav, 25, random_crop=True), torch.cat([wav, wav, wav[:5]]))


def test_exact_length_is_kept():
    wav = torch.arange(10.0)
    assert torch.equal(fix_length(wav, 10), wav)
    assert torch.equal(fix_length(wav, 10, random_crop=True), wav)


def test_long_clips_are_centre_cropped_in_evaluation():
    assert torch.equal(fix_length(torch.arange(10.0), 4), torch.tensor([3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(fix_length(torch.arange(11.0), 4), torch.tensor([3.0, 4.0, 5.0, 6.0]))


def test_long_clips_are_randomly_cropped_in_training():
    wav = torch.arange(100.0)
    starts = set()
    for seed in range(20):
        crop = fix_length(wav, 10, random_crop=True, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(crop, torch.arange(crop[0], crop[0] + 10))  # a contiguous window
        starts.add(int(crop[0]))
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 90
    # The generator makes it reproducible.
    again = [fix_length(wav, 10, True, torch.Generator().manual_seed(s)) for s in (3, 3)]
    assert torch.equal(*again)


def test_empty_clip_is_refused():
    with pytest.raises(ValueError, match=r"^Cannot bring an empty signal to a fixed length\.$"):
        fix_length(torch.zeros(0), 10)


def test_frames_to_samples():
    assert frames_to_samples(373, 256) == 372 * 256
