"""Universal perturbation on the waveform: one perturbation for every utterance, learnt on the training split."""

import math
from typing import NamedTuple

import torch

from ser_adv_brain.attacks.base import LEAST_LIKELY, GradientAttack, keyed_seed
from ser_adv_brain.attacks.waveform_budget import AdversarialAudio
from ser_adv_brain.audio.pcm import PCM16_SCALE, length_mask, quantize_pcm16, snr_db
from ser_adv_brain.checks import check_non_negative, check_positive_int

UNIVERSAL_NORMS = ("universal",)


class LearntPerturbation(NamedTuple):
    """What ``UniversalPerturbation.learn`` returns, and what a cache holds."""

    perturbation: torch.Tensor  # [length] v, on the 16-bit PCM grid, within its budget
    budget: float  # dB below the reference level
    reference_rms: float  # the median RMS of the training utterances (full scale 1)
    training_ids: tuple  # the utterances it was learnt on, sorted
    fooled_share: float  # share of the training utterances the last pass found fooled (or at the target)
    passes: int  # utterance passes through the model (each a forward and a backward) it cost


def rms(tensor):
    """Root mean square of a 1-D tensor.

    Example
    -------
    >>> rms(torch.tensor([3.0, -4.0, 3.0, -4.0]))
    3.5355339059327378
    """
    return float(tensor.double().pow(2).mean().sqrt())


def laid_over(perturbation, length, mask=None):
    """``[1, length]``: ``perturbation`` tiled from the first sample and cropped to ``length`` (or ``[batch,
    length]``, zero on the padding that ``mask`` marks)."""
    repeats = -(-length // len(perturbation))
    tiled = perturbation.repeat(repeats)[:length].unsqueeze(0)
    return tiled if mask is None else tiled * mask


class UniversalPerturbation(GradientAttack):
    """One perturbation ``v`` added to every utterance (Moosavi-Dezfooli et al., CVPR 2017), on the waveform.

    Budget: ``eps`` dB below a reference level ``R``, the median RMS of the
    training utterances (their real samples, on the 16-bit grid):
    ``rms(v) <= R * 10^(-eps / 20)``. An utterance as loud as the median
    training one then carries ``v`` at ``eps`` dB SNR, a louder one at more, a
    quieter one at less; each test utterance's realised SNR is reported, as the
    per-utterance waveform attacks' is. ``eps = inf`` is no perturbation.

    Learning, on the training split only: projected stochastic gradient ascent
    on the loss of the utterances not yet fooled, one step per batch, ``epochs``
    passes over the split, from a random point on the ball's surface::

        v <- P(v + a g / |g|_2),  g = grad_v sum_{i not fooled} L(f(x_i + T_i v), y_i)

    ``P`` projects onto ``|v|_2 <= rho = R 10^(-eps/20) sqrt(length)``, ``a =
    rel_step_size * rho``, ``L`` the cross-entropy of ``label_source``'s labels
    (negated towards ``target_class`` when targeted). This is the projected-SGD
    variant (Shafahi et al., AAAI 2020) of the paper's algorithm, which instead
    adds, for each input not yet fooled, its minimal DeepFool perturbation: a
    DeepFool step needs a gradient per class, so the variant costs about a
    class count fewer passes for as strong a ``v``, and it maximises the loss
    the suite's per-utterance attacks maximise, so the masking check that
    compares them compares like with like.

    Applying ``v`` (``T_i``): tiled from the utterance's first sample and
    cropped to its length, zero on its padding (``wav_lens``). ``v`` is rounded
    towards zero onto the 16-bit PCM grid once learnt (its RMS stays within the
    budget) and the sum clipped to what a 16-bit file holds, as ``WaveformBudget``
    does for the per-utterance attacks; the SNR is against the clean audio
    rounded to 16-bit PCM.

    The attack declares ``needs_training_data``: ``learn`` must run at every
    budget before ``run`` (the end-of-run reports and ``ser-adv evaluate`` do it
    once per budget, and keep ``v``: ``ser_adv_brain.evaluation.universal``).
    ``run`` never learns, so the utterances it attacks are never seen while learning.

    Arguments
    ---------
    eps : float
        dB below the reference level (the suite's budgets replace it).
    epochs : int
        Passes over the training split.
    rel_step_size : float
        Step length as a fraction of the ball's radius.
    length : int or None
        Samples of ``v``; None: the longest training utterance.
    seed : int
        Seeds the random start (with the budget) and the training pipeline's
        random crops while learning (torch's global random stream is left as it was).
    label_source, model_mode, target_class, class_names :
        See ``GradientAttack``; one emotion as ``target_class`` (``least_likely``
        differs per utterance, so no single ``v`` serves it).

    Example
    -------
    >>> import torch
    >>> from ser_adv_brain.features import FeatureNormalizer, LogMel
    >>> from ser_adv_brain.models import CNN4, WaveformClassifier
    >>> classifier = WaveformClassifier(LogMel(n_mels=20), FeatureNormalizer(20), CNN4(base_channels=2))
    >>> train = [(["a", "b"], 0.1 * torch.randn(2, 4000), None, torch.tensor([0, 1]))]
    >>> attack = UniversalPerturbation(eps=30.0, epochs=2)
    >>> learnt = attack.learn(classifier, lambda: train)
    >>> bool(20 * math.log10(learnt.reference_rms / rms(learnt.perturbation)) >= 30.0)
    True
    >>> out = attack.run(classifier, 0.1 * torch.randn(3, 6000), targets=None)
    >>> out.wavs.shape, out.snr_db.shape
    (torch.Size([3, 6000]), torch.Size([3]))
    """

    domain = "waveform"
    norm = "universal"
    reports = ("snr_db",)
    needs_training_data = True

    def __init__(
        self,
        eps,
        epochs=5,
        rel_step_size=0.1,
        length=None,
        seed=0,
        label_source="predicted",
        model_mode="eval",
        target_class=None,
        class_names=None,
    ):
        if target_class == LEAST_LIKELY:
            raise ValueError(
                f"target_class {LEAST_LIKELY!r} differs per utterance; a universal perturbation takes one emotion."
            )
        # No eta: the features' clip has no meaning on the samples.
        super().__init__(
            eps,
            eta=None,
            label_source=label_source,
            model_mode=model_mode,
            target_class=target_class,
            class_names=class_names,
            norm="universal",
        )
        check_positive_int(epochs=epochs)
        if length is not None:
            check_positive_int(length=length)
        check_non_negative(rel_step_size=rel_step_size)
        self.epochs, self.rel_step_size, self.length, self.seed = epochs, float(rel_step_size), length, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.learnt = {}  # budget -> LearntPerturbation

    @staticmethod
    def norms():
        return UNIVERSAL_NORMS

    def check_budget(self, eps):
        """Any number of dB, or inf (no perturbation)."""
        if not isinstance(eps, (int, float)) or math.isnan(eps) or eps == -math.inf:
            raise ValueError(f"eps (dB below the reference level) must be a number or inf, got {eps!r}")

    @property
    def kind(self):
        """``"universal"``: one input-agnostic perturbation, compared with the per-utterance waveform attacks."""
        return "universal"

    @property
    def name(self):
        """``Universal``, or ``Universal-T (anger)`` aimed at an emotion."""
        if not self.targeted:
            return "Universal"
        target = self.class_names[self.target_index] if self.target_index is not None and self.class_names else None
        return f"Universal-T ({target or self.target_class})"

    @property
    def uses_given_gradient(self):
        return False

    def __repr__(self):
        return (
            f"{super().__repr__()[:-1]}, epochs={self.epochs}, rel_step_size={self.rel_step_size}, "
            f"length={self.length}, seed={self.seed})"
        )

    def learn(self, model, batches, eps=None):
        """Learns ``v`` within ``eps`` (the attack's own if None) from ``batches``, keeps it for ``run``, returns it.

        Arguments
        ---------
        model : WaveformClassifier
            Waveforms -> ``(logits, embedding)``.
        batches : callable
            Returns an iterable of training batches ``(ids, wavs, wav_lens, targets)`` (``wav_lens``
            relative, or None); called once per pass.

        Returns
        -------
        LearntPerturbation
        """
        eps = self.eps if eps is None else float(eps)
        self.check_budget(eps)
        # Each budget's draws from the seed alone, so that a v does not depend on which budgets were learnt before.
        self.generator.manual_seed(keyed_seed(self.seed, f"universal@{eps}"))
        # The pipeline's random crops draw from torch's global generator: seeded here, and put back after.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            reference, length, ids = self.reference_level(batches)
            radius = reference * 10 ** (-eps / 20) * math.sqrt(length)
            perturbation, fooled, passes = self.ascend(model, batches, length, radius)
        perturbation = torch.trunc(perturbation * PCM16_SCALE) / PCM16_SCALE  # towards zero: stays in budget
        learnt = LearntPerturbation(perturbation, eps, reference, ids, fooled, passes)
        return self.use(learnt)

    def use(self, learnt):
        """Keeps a ``LearntPerturbation`` (learnt here, or read from a cache) for ``run`` at its budget."""
        self.check_budget(learnt.budget)
        self.learnt[float(learnt.budget)] = learnt
        return learnt

    def reference_level(self, batches):
        """The median RMS of the training utterances' real samples (16-bit), ``v``'s length, the sorted IDs."""
        levels, lengths, ids = [], [], []
        for batch_ids, wavs, wav_lens, _ in batches():
            clean = quantize_pcm16(wavs.detach().cpu()).double()
            mask = length_mask(clean, wav_lens)
            real = torch.full((len(clean),), clean.shape[1]) if mask is None else mask.sum(dim=1)
            levels.append((clean.pow(2) * (1.0 if mask is None else mask)).sum(dim=1).div(real).sqrt())
            lengths.append(real)
            ids.extend(batch_ids)
        if not ids:
            raise ValueError(f"{self.name}: the training split is empty: nothing to learn the perturbation on.")
        reference = float(torch.cat(levels).median())
        length = self.length or int(torch.cat(lengths).max())
        return reference, length, tuple(sorted(ids))

    def ascend(self, model, batches, length, radius):
        """``epochs`` passes of projected gradient ascent; ``v``, the last pass's fooled share, the passes it cost."""
        direction = torch.randn(length, generator=self.generator, dtype=torch.float64)
        perturbation = direction * (radius / float(direction.norm().clamp_min(1e-12)))
        passes = 0
        with self.generation_mode(model):
            for _ in range(self.epochs):
                fooled = seen = 0
                for _, wavs, wav_lens, targets in batches():
                    clean = quantize_pcm16(wavs.detach())
                    mask = length_mask(clean, wav_lens)
                    labels = self.training_labels(model, clean, targets)
                    v = perturbation.to(clean).requires_grad_(True)
                    logits, _ = model(clean + laid_over(v, clean.shape[1], mask))
                    going = ~self.succeeded(logits.detach(), labels)
                    fooled, seen, passes = fooled + int((~going).sum()), seen + len(clean), passes + len(clean)
                    if not going.any():
                        continue
                    (grad,) = torch.autograd.grad(self.loss(logits, labels)[going].sum(), v)
                    grad = grad.detach().double().cpu()
                    stepped = perturbation + self.rel_step_size * radius * grad / grad.norm().clamp_min(1e-12)
                    perturbation = stepped * min(1.0, radius / float(stepped.norm().clamp_min(1e-12)))
        return perturbation.float(), fooled / max(1, seen), passes

    def training_labels(self, model, clean, targets):
        """The labels attacked on a training batch: the true ones, or (from the clean prediction) the predicted
        ones or the target's."""
        if not self.targeted and self.label_source == "target":
            if targets is None:
                raise ValueError(f"{self!r} attacks the true labels (label_source='target'): pass targets.")
            return targets
        with torch.no_grad():
            logits, _ = model(clean)
        return self.labels(logits, targets)

    def run(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, wav_lens=None, keys=None):
        """The clean audio plus the ``v`` learnt at ``eps`` (the attack's own if None), and the realised SNR.

        ``model``, ``targets``, ``loss_scale``, ``gradient`` and ``keys`` are
        not used: ``v`` is the same for every utterance, and fixed once learnt.

        Returns
        -------
        AdversarialAudio
            ``(wavs, snr_db)``, as ``WaveformBudget.run``.
        """
        eps = self.eps if eps is None else float(eps)
        self.check_budget(eps)
        if eps not in self.learnt:
            raise ValueError(
                f"{self.name} has no perturbation learnt at {eps:g} dB (it has {sorted(self.learnt)}): "
                "call learn on the training split first (ser_adv_brain.evaluation.universal)."
            )
        clean = quantize_pcm16(inputs.detach())
        delta = laid_over(self.learnt[eps].perturbation.to(clean), clean.shape[1], length_mask(clean, wav_lens))
        wavs = (clean + delta).clamp(-1.0, (PCM16_SCALE - 1) / PCM16_SCALE)
        return AdversarialAudio(wavs, snr_db(clean, wavs, wav_lens))

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, keys=None, wav_lens=None):
        """The adversarial audio of ``run``, without the SNR."""
        return self.run(model, inputs, targets, eps, wav_lens=wav_lens).wavs
