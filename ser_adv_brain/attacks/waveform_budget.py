"""The waveform threat model of PGD-type attacks: an SNR or amplitude budget on the samples, scored as 16-bit PCM."""

import math
from typing import NamedTuple

import torch

from ser_adv_brain.attacks.pgd import l2_norms
from ser_adv_brain.audio.pcm import PCM16_SCALE, length_mask, quantize_pcm16, snr_db
from ser_adv_brain.checks import check_non_negative

WAVEFORM_NORMS = ("linf", "snr")


class AdversarialAudio(NamedTuple):
    """What ``WaveformPGD.run`` returns."""

    wavs: torch.Tensor  # [batch, time], on the 16-bit PCM grid
    snr_db: torch.Tensor  # [batch], realised SNR of each utterance (inf where unchanged)


def as_pcm16(adversarial, clean):
    """``adversarial`` as a 16-bit file holds it: its perturbation of ``clean`` (on the PCM grid) rounded
    towards zero onto the grid, so that the budget holds after rounding."""
    delta = torch.trunc((adversarial - clean) * PCM16_SCALE) / PCM16_SCALE
    return (clean + delta).clamp(-1.0, (PCM16_SCALE - 1) / PCM16_SCALE)


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
    reports = ("snr_db",)

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
        wavs = as_pcm16(adversarial, clean)
        return AdversarialAudio(wavs, snr_db(clean, wavs, wav_lens))

    def succeeded_as_scored(self, model, adversarial, inputs, succeeded, labels):
        """Whether the audio rounded to 16-bit PCM still fools, where the iterate ``adversarial`` does (one
        forward pass of those utterances): so that an attack stops only on what the suite will score as fooled."""
        rows = succeeded.nonzero().view(-1)
        if len(rows) == 0:
            return succeeded
        with torch.no_grad():
            logits, _ = model(as_pcm16(adversarial[rows], inputs[rows]))
        confirmed = succeeded.clone()
        confirmed[rows] = self.succeeded(logits, labels[rows])
        return confirmed

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, wav_lens=None, keys=None):
        """The adversarial audio of ``run``, without the SNR."""
        return self.run(model, inputs, targets, eps, loss_scale, gradient, wav_lens, keys).wavs
