"""Waveform PGD: the SNR and amplitude budgets after 16-bit rounding, padding, the realised SNR, the gradient path."""

import math

import pytest
import torch

from ser_adv_brain.attacks import PGD, WaveformAPGD, WaveformPGD
from ser_adv_brain.audio.pcm import quantize_pcm16, snr_db
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.models import CNN4, WaveformClassifier


@pytest.fixture
def classifier():
    torch.manual_seed(0)
    compute_features, normalizer = LogMel(n_mels=20), FeatureNormalizer(20)
    wavs = 0.2 * torch.randn(8, 4000)
    normalizer.fit([compute_features(wavs)])
    return WaveformClassifier(compute_features, normalizer, CNN4(n_classes=4, base_channels=2)).eval()


@pytest.fixture
def wavs():
    generator = torch.Generator().manual_seed(1)
    # Different loudness per utterance: the SNR budget is relative to each one.
    return torch.randn(4, 4000, generator=generator) * torch.tensor([[0.02], [0.1], [0.3], [0.05]])


def on_pcm16_grid(wavs):
    scaled = wavs.double() * 32768
    return torch.equal(scaled, scaled.round())


@pytest.mark.parametrize("snr", [40.0, 20.0, 5.0])
def test_snr_budget_holds_after_16_bit_rounding(classifier, wavs, snr):
    out = WaveformPGD(eps=snr, steps=3, rel_step_size=0.5).run(classifier, wavs, None)
    clean = quantize_pcm16(wavs)
    assert on_pcm16_grid(out.wavs)
    independent = 10 * torch.log10(clean.double().pow(2).sum(1) / (out.wavs.double() - clean.double()).pow(2).sum(1))
    assert torch.allclose(out.snr_db, independent)
    assert (out.snr_db >= snr).all()
    assert (out.snr_db < snr + 3.0).all()  # and most of it is used


def test_amplitude_budget_holds_after_16_bit_rounding(classifier, wavs):
    eps = 0.002
    out = WaveformPGD(eps=eps, norm="linf", steps=3).run(classifier, wavs, None)
    delta = (out.wavs - quantize_pcm16(wavs)).abs().amax(dim=1)
    assert on_pcm16_grid(out.wavs)
    assert (delta <= eps).all() and (delta > eps - 2 / 32768).all()
    assert torch.allclose(out.snr_db, snr_db(quantize_pcm16(wavs), out.wavs))


def test_loud_audio_stays_within_what_16_bit_pcm_holds(classifier):
    loud = torch.linspace(-1.0, 32767 / 32768, 4000).repeat(2, 1)  # every sample near or at full scale
    out = WaveformPGD(eps=0.05, norm="linf", steps=2).run(classifier, loud, None)
    assert float(out.wavs.min()) == -1.0 and float(out.wavs.max()) == 32767 / 32768  # pushed onto both rails
    assert on_pcm16_grid(out.wavs)


@pytest.mark.parametrize(
    "attack",
    [
        WaveformPGD(eps=20.0, steps=2),
        WaveformAPGD(eps=20.0, steps=2),
        WaveformAPGD(eps=20.0, steps=2, loss="dlr", targets=2),
    ],
    ids=["WaveformPGD", "WaveformAPGD-CE", "WaveformAPGD-T"],
)
def test_padding_is_left_alone_and_not_counted(attack, classifier, wavs):
    wav_lens = torch.tensor([1.0, 0.5, 0.75, 0.25])
    padded = wavs  # samples after each length stand for padding (non-zero, so that counting them would show)
    out = attack.run(classifier, padded, None, wav_lens=wav_lens)
    for index, rel in enumerate(wav_lens.tolist()):
        real = int(rel * 4000)
        assert torch.equal(out.wavs[index, real:], quantize_pcm16(padded[index, real:])), index
        clean = quantize_pcm16(padded[index, :real]).double()
        noise = out.wavs[index, :real].double() - clean
        assert math.isclose(
            float(out.snr_db[index]), float(10 * torch.log10(clean.pow(2).sum() / noise.pow(2).sum())), rel_tol=1e-9
        )
    assert (out.snr_db >= 20.0).all()


def test_infinite_snr_leaves_the_audio_clean(classifier, wavs):
    out = WaveformPGD(eps=30.0).run(classifier, wavs, None, eps=float("inf"))
    assert torch.equal(out.wavs, quantize_pcm16(wavs))
    assert torch.isinf(out.snr_db).all()


def test_the_gradient_flows_through_log_mel_and_normaliser(classifier, wavs):
    """The waveform attack is feature-domain PGD's rules applied to the samples: one BIM step is FGSM on the audio."""
    attack = WaveformPGD(eps=0.001, norm="linf", steps=1, rel_step_size=1.0, random_start=False)
    clean = quantize_pcm16(wavs).requires_grad_(True)
    logits, _ = classifier(clean)
    loss = torch.nn.functional.cross_entropy(logits, logits.argmax(dim=-1), reduction="sum")
    (grad,) = torch.autograd.grad(loss, clean)
    assert grad.abs().sum() > 0
    expected = clean.detach() + 32 / 32768 * grad.sign()  # a step of 32.768 LSB, truncated to 32
    out = attack.perturb(classifier, wavs, None)
    # Equal but for a few samples whose gradient is within rounding of zero.
    assert (out != expected).double().mean() < 1e-3


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        (dict(eps=20.0, norm="l2"), "norm"),
        (dict(eps=float("nan")), "eps"),
        (dict(eps=-0.1, norm="linf"), "eps"),
        (dict(eps=20.0, steps=0), "steps"),
        (dict(eps=20.0, restarts=0), "restarts"),
    ],
)
def test_invalid_options_are_named(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        WaveformPGD(**kwargs)


def test_threat_models():
    assert WaveformPGD(eps=20.0).threat_model == "waveform_snr"
    assert WaveformPGD(eps=0.01, norm="linf").threat_model == "waveform_linf"
    assert PGD(eps=0.1, norm="l2").threat_model == "features_l2"
