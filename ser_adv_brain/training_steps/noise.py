"""Noise augmentation: ``objective(real, noisy twin)``, the paper's baselines, or ``L(noisy)`` alone, smoothing's.

The fake twin of the real batch is a noisy copy instead of an attack's output:
white noise on the raw audio at an SNR range (SpeechBrain's ``AddNoise``), or
Gaussian noise on the normalised log-Mel (``GaussianFeatureNoise``). With the
vanilla objective, ``alpha * L(x) + (1 - alpha) * L(x~)``, each step sees the
same data as vanilla adversarial training and differs only in where the twin
comes from (Ren et al., ICASSP 2020).

Without an objective (``objective: null`` in the yaml) the step trains on the
noisy copy alone, ``L(x + d)``, as Cohen et al. (ICML 2019) train the base
classifier of randomised smoothing with ``d ~ N(0, sigma^2 I)``
(``GaussianWaveformNoise``, ``GaussianFeatureNoise``).
"""

from ser_adv_brain.checks import check_non_negative_int
from ser_adv_brain.objectives.base import AdversarialObjective, classification_loss
from ser_adv_brain.training_steps.adversarial import AdversarialStep, detached


class NoiseStep(AdversarialStep):
    """``objective(real, fake)`` with ``fake = noise(real)``: no attack, no input gradient.

    Passes per step: 2 forwards + 2 backwards, as the fused adversarial step,
    since the noise needs no gradient. When only ``w * L(x)`` reaches the real
    branch (vanilla), the real term is backpropagated before the fake forward
    (the real graph is freed early); otherwise (the similarity distance) both
    branches go through ``fit_batch``'s one backward, the one DDP all-reduce.

    With ``objective=None`` the loss is ``L(x~)`` alone: the noisy copy is the
    step's one forward, through DDP, and its one backward (the clean step's
    cost). The clean batch never enters the model, so batch norm's running
    statistics are those of noisy inputs, the inputs a smoothed classifier
    feeds it. (The vanilla objective with ``alpha: 0`` gives the same loss,
    but its clean forward, in train mode, would also update them on clean data,
    and cost a forward and a backward more.)

    Arguments
    ---------
    noise : callable
        Makes the noisy copy (see the subclasses).
    objective : AdversarialObjective or None
        None: ``L(x~)`` alone (randomised smoothing's training).
    warmup_steps : int
        Clean optimiser steps first (0 by default: the noise does not depend on the model).
    """

    def __init__(self, noise, objective, warmup_steps=0):
        if objective is not None and not isinstance(objective, AdversarialObjective):
            raise TypeError(f"hparams 'objective' must be an AdversarialObjective or null, got {objective!r}")
        check_non_negative_int(warmup_steps=warmup_steps)
        self.noise, self.objective, self.warmup_steps = noise, objective, warmup_steps

    def __repr__(self):
        parts = f"noise={self.noise!r}, objective={self.objective!r}, warmup_steps={self.warmup_steps}"
        return f"{type(self).__name__}({parts})"

    @property
    def trains_on_noisy_copies_only(self):
        return self.objective is None

    def generators(self):
        """None of its own: the noise draws from the global generators, which ``RandomState`` saves."""
        return []

    def forward(self, brain, batch):
        """The real forward, outside DDP; without an objective, the noisy forward through DDP instead."""
        if self.objective is None:
            feats = self.noisy_features(brain, batch)
            logits, embedding = brain.modules.model(feats)
            return {"feats": feats, "logits": logits, "embedding": embedding}
        feats = brain.compute_features(batch.sig.data).detach()
        logits, embedding = brain.model(feats)
        return {"feats": feats, "logits": logits, "embedding": embedding}

    def noisy_features(self, brain, batch, feats=None):
        """The model's input for the noisy copy of ``batch`` (``feats``: its clean features, if computed)."""
        raise NotImplementedError

    def fake_inputs(self, brain, batch, feats, targets, gradient):
        return self.noisy_features(brain, batch, feats)

    def loss(self, brain, predictions, batch):
        if self.objective is None:
            return {"loss": classification_loss(predictions["logits"], brain.targets(batch))}
        targets, feats = brain.targets(batch), predictions["feats"]
        real = (predictions["logits"], predictions["embedding"])
        if not self.objective.couples_real_branch:
            self.real_term(brain, real[0], targets).backward()
            real = detached(real)
        fake = self.fake_forward(brain, batch, feats, targets, gradient=None)
        return self.objective(real, fake, targets)


class WaveformNoiseStep(NoiseStep):
    """The twin is ``compute_features(noise(audio, lengths))``: noise on the raw audio.

    ``noise`` is SpeechBrain's ``speechbrain.augment.time_domain.AddNoise``
    (without a noise csv: white noise at an SNR drawn per utterance from
    ``[snr_low, snr_high]`` dB), ``GaussianWaveformNoise`` (a fixed sigma,
    randomised smoothing's), ``RoomAugmentation`` (a recording in a simulated
    room), or any module with its call signature.
    """

    def noisy_features(self, brain, batch, feats=None):
        wavs, lengths = batch.sig.data.to(brain.device), batch.sig.lengths.to(brain.device)
        return brain.compute_features(self.noise(wavs, lengths)).detach()


class FeatureNoiseStep(NoiseStep):
    """The twin is ``noise(feats)``: noise on the normalised log-Mel (``GaussianFeatureNoise``)."""

    def noisy_features(self, brain, batch, feats=None):
        feats = brain.compute_features(batch.sig.data) if feats is None else feats
        return self.noise(feats.detach())
