"""PGD on the audio samples, under an amplitude or a per-utterance SNR budget, scored as 16-bit PCM."""

import math
from typing import NamedTuple

import torch

from ser_adv_brain.attacks.base import check_non_negative
from ser_adv_brain.attacks.pgd import PGD, l2_norms

PCM16_SCALE = 32768.0  # soundfile reads 16-bit PCM as int / 32768
WAVEFORM_NORMS = ("linf", "snr")


class WaveformClassifier(torch.nn.Module):
    """Waveforms ``[batch, time]`` -> ``(logits, embedding)``: log-Mel, normaliser, model, all differentiable.

    The classifier a waveform attack sees; the modules are shared, not copied.

    Arguments
    ---------
    compute_features : LogMel
    normalizer : FeatureNormalizer
    model : torch.nn.Module
        Features -> ``(logits, embedding)``.
    """

    def __init__(self, compute_features, normalizer, model):
        super().__init__()
        self.compute_features = compute_features
        self.normalizer = normalizer
        self.model = model

    def forward(self, wavs):
        return self.model(self.normalizer(self.compute_features(wavs)))


class AdversarialAudio(NamedTuple):
    """What ``WaveformPGD.run`` returns."""

    wavs: torch.Tensor  # [batch, time], on the 16-bit PCM grid
    snr_db: torch.Tensor  # [batch], realised SNR of each utterance (inf where unchanged)


def quantize_pcm16(wavs):
    """The nearest values a 16-bit PCM file holds (``k / 32768``, ``k`` in [-32768, 32767])."""
    return (wavs * PCM16_SCALE).round().clamp(-PCM16_SCALE, PCM16_SCALE - 1) / PCM16_SCALE


def length_mask(wavs, wav_lens=None):
    """``[batch, time]``: 1 on each signal's real samples, 0 on the padding (``wav_lens`` relative, as SpeechBrain's).

    None when nothing is padded (the attack then skips the masking).
    """
    if wav_lens is None:
        return None
    lengths = torch.round(wav_lens.to(wavs.device).float() * wavs.shape[1])
    if bool((lengths >= wavs.shape[1]).all()):
        return None
    return (torch.arange(wavs.shape[1], device=wavs.device) < lengths.unsqueeze(1)).to(wavs.dtype)


def snr_db(clean, adversarial, wav_lens=None):
    """Per-utterance ``10 log10(|x|^2 / |x' - x|^2)`` over the real samples; inf where nothing changed."""
    mask = length_mask(clean, wav_lens)
    mask = 1.0 if mask is None else mask.double()
    signal = (clean.double() * mask).pow(2).sum(dim=1)
    noise = ((adversarial.double() - clean.double()) * mask).pow(2).sum(dim=1)
    return 10 * torch.log10(signal / noise)


class WaveformBudget:
    """The waveform threat model of a PGD-type attack (``PGD``, ``APGD``): budget, radius, 16-bit PCM rounding.

    A mixin before the attack class (``class WaveformPGD(WaveformBudget, PGD)``): the perturbation lives
    on the samples, and the gradient flows through the differentiable log-Mel and normaliser
    (``WaveformClassifier``). The budget ``eps`` is, by ``norm``:

    - ``"snr"``: a signal-to-noise ratio in dB for each utterance: the L2
      ball of radius ``|x|_2 / 10^(eps / 20)`` (the SNR-bounded PGD of
      robust_speech, Olivier and Raj, 2022); ``eps = inf`` leaves the audio clean;
    - ``"linf"``: an amplitude, in full-scale units (1.0 = the largest sample).

    The adversarial audio is what a 16-bit file would hold: the clean audio
    is first rounded to 16-bit PCM (a no-op for audio read from such files),
    the attack runs around it, and its perturbation is rounded towards zero
    onto the PCM grid, so the budget holds after rounding; the results are
    scored on the rounded audio.

    Padding: with ``wav_lens`` (relative lengths), the perturbation is zero
    on each signal's padding, and norms and SNRs count the real samples only.
    """

    domain = "waveform"

    @staticmethod
    def norms():
        return WAVEFORM_NORMS

    def check_budget(self, eps):
        """An SNR may be any number of dB, or inf (no perturbation); an amplitude is >= 0."""
        if self.norm == "snr":
            if not isinstance(eps, (int, float)) or math.isnan(eps) or eps == -math.inf:
                raise ValueError(f"eps (the SNR in dB, norm='snr') must be a number or inf, got {eps!r}")
        else:
            check_non_negative(eps=eps)

    def radius(self, inputs, eps, mask=None):
        """Per utterance: the amplitude (linf), or ``|x|_2 / 10^(eps / 20)`` over the real samples (snr)."""
        self.check_budget(eps)
        if self.norm == "linf":
            return float(eps)
        return l2_norms(inputs if mask is None else inputs * mask) / 10 ** (float(eps) / 20)

    def run(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, wav_lens=None, keys=None):
        """Adversarial audio within ``eps`` (the attack's own if None), and its realised SNR.

        Arguments
        ---------
        model : WaveformClassifier
            Waveforms -> ``(logits, embedding)``.
        inputs : torch.Tensor
            ``[batch, time]`` waveforms.
        targets, loss_scale, gradient :
            See ``PGD.perturb``.
        wav_lens : torch.Tensor or None
            Relative lengths; None: no padding.
        keys : list or None
            One per utterance: see ``PGD.perturb``.

        Returns
        -------
        AdversarialAudio
            ``(wavs, snr_db)``; the SNR is against the clean audio rounded to 16-bit PCM.
        """
        clean = quantize_pcm16(inputs.detach())
        mask = length_mask(clean, wav_lens)
        radius = self.radius(clean, self.eps if eps is None else eps, mask)
        adversarial = self.attack(model, clean, targets, radius, loss_scale, gradient, mask, keys)
        delta = torch.trunc((adversarial - clean) * PCM16_SCALE) / PCM16_SCALE  # towards zero: stays in budget
        wavs = (clean + delta).clamp(-1.0, (PCM16_SCALE - 1) / PCM16_SCALE)
        return AdversarialAudio(wavs, snr_db(clean, wavs, wav_lens))

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, wav_lens=None, keys=None):
        """The adversarial audio of ``run``, without the SNR."""
        return self.run(model, inputs, targets, eps, loss_scale, gradient, wav_lens, keys).wavs


class WaveformPGD(WaveformBudget, PGD):
    """PGD whose perturbation lives on the samples (Madry et al., 2018, in the waveform domain).

    The budget, its units and the 16-bit rounding are ``WaveformBudget``'s.

    Arguments
    ---------
    eps : float
        The budget in the norm's unit (dB for ``"snr"``).
    norm : str
        ``"snr"`` or ``"linf"``.
    steps, rel_step_size, random_start, restarts, seed, label_source, model_mode, target_class, class_names :
        See ``PGD``. (No ``stop_when_fooled``: an iterate that fools the model may not once its
        perturbation is rounded to 16-bit PCM, so every step is taken.)

    Example
    -------
    >>> from ser_adv_brain.features import FeatureNormalizer, LogMel
    >>> from ser_adv_brain.models import CNN4
    >>> classifier = WaveformClassifier(LogMel(n_mels=20), FeatureNormalizer(20), CNN4(base_channels=2))
    >>> wavs = 0.1 * torch.randn(2, 4000)
    >>> out = WaveformPGD(eps=30.0, steps=2).run(classifier, wavs, targets=None)
    >>> bool((out.snr_db >= 30.0).all())
    True
    """

    def __init__(
        self,
        eps,
        steps=10,
        rel_step_size=None,
        norm="snr",
        random_start=True,
        restarts=1,
        seed=0,
        label_source="predicted",
        model_mode="eval",
        target_class=None,
        class_names=None,
    ):
        # No eta: the features' clip has no meaning on the samples.
        super().__init__(
            eps=eps, steps=steps, rel_step_size=rel_step_size, norm=norm, random_start=random_start,
            restarts=restarts, seed=seed, stop_when_fooled=False, eta=None, label_source=label_source,
            model_mode=model_mode, target_class=target_class, class_names=class_names,
        )  # fmt: skip
