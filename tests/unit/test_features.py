"""The paper's log-Mel features and the per-bin z-score."""

import librosa
import numpy as np
import pytest
import torch

from ser_adv_brain.audio.loading import frames_to_samples
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.features.log_mel import StftMagnitude


def test_paper_settings_by_default():
    mel = LogMel().mel
    assert (mel.sample_rate, mel.n_fft, mel.hop_length, mel.n_mels) == (16000, 512, 256, 64)
    assert (mel.f_min, mel.f_max, mel.power) == (20.0, 8000.0, 1.0)
    assert torch.equal(mel.spectrogram.window, torch.hamming_window(512))
    assert LogMel().log_offset == 1e-8


def test_373_frames_of_64_bins():
    wavs = torch.randn(2, frames_to_samples(373, 256))
    assert LogMel()(wavs).shape == (2, 373, 64)


def test_silence_is_log_of_the_offset():
    feats = LogMel()(torch.zeros(1, 2560))
    assert torch.allclose(feats, torch.full_like(feats, float(np.log(1e-8))))


@pytest.mark.parametrize(
    "settings",
    [{}, {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 40, "f_min": 50, "f_max": 4000}],
    ids=["paper", "other"],
)
def test_matches_librosa(settings):
    """Magnitude STFT (Hamming 512, hop 256), Slaney Mel filters 20-8000 Hz, log(x + 1e-8); and other settings."""
    paper = {"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 64, "f_min": 20, "f_max": 8000}
    s = {**paper, **settings}
    rng = np.random.default_rng(0)
    t = np.arange(s["sample_rate"] // 2) / s["sample_rate"]
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    reference = librosa.feature.melspectrogram(
        y=wav,
        sr=s["sample_rate"],
        n_fft=s["n_fft"],
        hop_length=s["hop_length"],
        window="hamming",
        power=1.0,
        n_mels=s["n_mels"],
        fmin=s["f_min"],
        fmax=s["f_max"],
        pad_mode="reflect",
    )
    logmel = LogMel(**settings)
    assert logmel.hop_length == s["hop_length"]
    ours = logmel(torch.from_numpy(wav)[None])[0]
    assert ours.shape == (reference.shape[1], s["n_mels"])
    assert np.allclose(ours.numpy(), np.log(reference + 1e-8).T, atol=1e-3)


def test_differentiable_with_respect_to_the_waveform():
    torch.manual_seed(0)
    wav = (0.1 * torch.randn(1, 4096)).requires_grad_(True)
    logmel = LogMel()
    feats = logmel(wav)
    weights = torch.randn_like(feats)
    (grad,) = torch.autograd.grad((feats * weights).sum(), wav)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # The gradient predicts the change of the output for a small step.
    direction = torch.randn_like(wav)
    step = 1e-3
    with torch.no_grad():
        change = ((logmel(wav + step * direction) - logmel(wav - step * direction)) * weights).sum() / (2 * step)
    assert float(change) == pytest.approx(float((grad * direction).sum()), rel=0.05)


@pytest.mark.parametrize("n_fft, hop_length", [(512, 256), (400, 160), (401, 100)])
def test_waveform_gradient_equals_torchaudios(n_fft, hop_length):
    """LogMel's hand-written STFT backward gives the gradient of autograd through torchaudio's MelSpectrogram."""
    torch.manual_seed(0)
    logmel = LogMel(n_fft=n_fft, hop_length=hop_length, n_mels=40)
    wavs = 0.1 * torch.randn(3, 8000)
    wavs[1, 2000:2600] = 0.0  # exact zeros: bins with no magnitude
    reference = torch.log(logmel.mel(wavs) + logmel.log_offset).transpose(-1, -2)
    assert torch.equal(logmel(wavs), reference)
    weights = torch.randn_like(reference)
    grads = []
    for features in (logmel, lambda w: torch.log(logmel.mel(w) + logmel.log_offset).transpose(-1, -2)):
        inputs = wavs.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((features(inputs) * weights).sum(), inputs)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * grads[1].abs().max())
    # Every frequency bin, including those the Mel filters barely weigh.
    window = torch.hamming_window(n_fft)
    grads = []
    for magnitude in (
        lambda w: StftMagnitude.apply(w, window, n_fft, hop_length),
        lambda w: (
            torch.stft(w, n_fft, hop_length, window=window, center=False, return_complex=True).abs().transpose(1, 2)
        ),
    ):
        inputs = wavs.clone().requires_grad_(True)
        output = magnitude(inputs)
        (grad,) = torch.autograd.grad((output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum(), inputs)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * grads[1].abs().max())


def test_normalizer_gives_zero_mean_unit_std_per_bin():
    torch.manual_seed(0)
    feats = torch.randn(6, 50, 8) * torch.linspace(0.5, 5.0, 8) + torch.linspace(-20.0, 3.0, 8)
    normalizer = FeatureNormalizer(n_mels=8)
    assert not normalizer.fitted
    normalizer.fit([feats])
    assert normalizer.fitted and int(normalizer.count) == 6 * 50
    z = normalizer(feats).reshape(-1, 8)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(8), atol=1e-4)


def test_normalizer_does_not_depend_on_batching():
    torch.manual_seed(1)
    feats = torch.randn(12, 30, 4) * 3 - 7
    whole, batched = FeatureNormalizer(4), FeatureNormalizer(4)
    whole.fit([feats])
    batched.fit(iter([feats[:1], feats[1:5], feats[5:12]]))  # a generator, as the Brain passes it
    assert torch.allclose(whole.mean, batched.mean, atol=1e-6)
    assert torch.allclose(whole.std, batched.std, atol=1e-6)
    assert int(whole.count) == int(batched.count)


def test_constant_bin_keeps_a_floor():
    feats = torch.randn(2, 10, 3)
    feats[..., 1] = 4.0
    normalizer = FeatureNormalizer(3)
    normalizer.fit([feats])
    assert float(normalizer.std[1]) == pytest.approx(normalizer.std_floor)
    assert torch.isfinite(normalizer(feats)).all()


def test_empty_training_set_is_refused():
    with pytest.raises(ValueError, match="empty"):
        FeatureNormalizer(3).fit([])


def test_statistics_travel_with_the_state_dict():
    fitted = FeatureNormalizer(3)
    fitted.fit([torch.randn(2, 5, 3) + 2.0])
    restored = FeatureNormalizer(3)
    restored.load_state_dict(fitted.state_dict())
    assert set(fitted.state_dict()) == {"mean", "std", "count"}
    assert fitted.count.dtype == torch.long and int(fitted.count) == 10  # frames seen
    assert FeatureNormalizer().mean.shape == (64,)  # the paper's 64 bins by default
    assert restored.fitted and torch.equal(restored.mean, fitted.mean) and torch.equal(restored.std, fitted.std)
