"""Adversarial training steps: ``objective(real, fake)`` on a real batch and its fake twin.

The fake twin is the attack's output at the real features (FGSM in Ren et al.,
ICASSP 2020; any ``Attack`` on the features) or, for an attack on the audio
(``domain == "waveform"``: ``WaveformPGD``, ``WaveformAPGD``, ``WaveformKLPGD``),
the model's input made from its adversarial audio: the attack runs on the
Brain's ``waveform_model`` (for a model on log-Mel features, the differentiable
``WaveformClassifier``: log-Mel, normaliser, the bare model; for a model that
takes the waveform, the bare model itself), on the batch's padded waveforms
with their lengths, and the twin is ``brain.compute_features`` of its audio
(that audio's normalised log-Mel, or the audio itself). The three steps
compute the same objective and differ only in how many passes it takes;
``adversarial_step`` picks the cheapest one that the attack and the objective
allow. Under DDP, every pass but the fake forward uses the bare model, so DDP's
reducer sees one forward and all-reduces once per step: gradients already in
``.grad`` before that forward are reduced with the fake branch's.

Passes per step, forwards + backwards (clean training: 1 + 1), attack's own passes aside:

- ``FusedAdversarialStep``: 2 + 2, the floor;
- ``SeparateAdversarialStep``: 2 + 3 with a train-mode attack (an input-only
  backward), 3 + 3 with an eval-mode one (its own forward and backward);
- ``CoupledAdversarialStep``: as the separate step, the real branch's
  backward merged into ``fit_batch``'s.

A waveform attack takes every gradient it needs itself, at the samples: its
step is the separate or the coupled one, at 2 + 2 and one log-Mel of the
adversarial audio.
"""

from ser_adv_brain.attacks.base import DOMAINS, Attack, GradientAttack
from ser_adv_brain.checks import check_non_negative_int
from ser_adv_brain.objectives.base import AdversarialObjective, classification_loss
from ser_adv_brain.training_steps.base import CleanStep, TrainingStep

CLEAN_STEP = CleanStep()
# The yaml key behind the step's attack: the paper's yaml files train on the report's FGSM
TRAINING_ATTACK = (
    "the training step's attack (hparams 'training_attack', or 'attack' where the yaml has no training_attack)"
)


def detached(outputs):
    return tuple(output.detach() for output in outputs)


def check_arguments(attack, objective, warmup_steps):
    """Raises an error naming the yaml key of a wrong argument."""
    if not isinstance(attack, Attack):
        raise TypeError(f"{TRAINING_ATTACK} must be an Attack, got {attack!r}")
    if attack.domain not in DOMAINS:
        raise TypeError(
            f"{TRAINING_ATTACK} must perturb one of {DOMAINS} (its class's 'domain'), "
            f"got {attack!r} with domain {attack.domain!r}"
        )
    if attack.needs_training_data or attack.needs_source_model:  # made once before an evaluation, not per batch
        raise TypeError(
            f"{TRAINING_ATTACK} must attack each batch on its own; {attack!r} needs the training split or "
            "another trained model first (an evaluation's attack: put it in attack_suite)"
        )
    if not isinstance(objective, AdversarialObjective):
        raise TypeError(f"hparams 'objective' must be an AdversarialObjective, got {objective!r}")
    check_non_negative_int(warmup_steps=warmup_steps)


class AdversarialStep(TrainingStep):
    """Base of the adversarial steps: the real forward, the fake branch, the warm-up.

    Arguments
    ---------
    attack : Attack
        Makes the fake features (``domain == "features"``) or the fake audio
        from which the twin is made (``domain == "waveform"``); its ``perturb``
        gets the bare model (the Brain's ``waveform_model`` for the audio),
        never the DDP-wrapped one.
    objective : AdversarialObjective
        ``objective(real, fake, targets)`` -> the loss and its parts.
    warmup_steps : int
        Optimiser steps of clean training (``CleanStep``) before the
        adversarial ones (1000 iterations in the authors' code).
    """

    def __init__(self, attack, objective, warmup_steps=0):
        check_arguments(attack, objective, warmup_steps)
        self.attack, self.objective, self.warmup_steps = attack, objective, warmup_steps

    def __repr__(self):
        parts = f"attack={self.attack!r}, objective={self.objective!r}, warmup_steps={self.warmup_steps}"
        return f"{type(self).__name__}({parts})"

    def at(self, optimizer_step):
        return CLEAN_STEP if optimizer_step < self.warmup_steps else self

    def generators(self):
        """The attack's own generator, if it draws random starts."""
        return [] if self.attack.generator is None else [self.attack.generator]

    def forward(self, brain, batch):
        """The real forward, outside DDP; the features require grad where the attack's gradient comes from it."""
        feats = brain.compute_features(batch.sig.data).detach()
        feats.requires_grad_(self.attack.domain == "features" and self.attack.model_mode == "train")
        logits, embedding = brain.model(feats)
        return {"feats": feats, "logits": logits, "embedding": embedding}

    def fake_inputs(self, brain, batch, feats, targets, gradient):
        """The fake input: the attack at the real features (``gradient``: its input gradient there, or None),
        or the model's input made from the attack's adversarial audio (its features, or the audio itself)."""
        if self.attack.domain == "features":
            loss_scale = brain.attack_loss_scale()
            return self.attack.perturb(brain.model, feats.detach(), targets, loss_scale=loss_scale, gradient=gradient)
        # The attack rounds its audio to 16-bit PCM as at evaluation (WaveformBudget), so the twin is
        # an input the attack suite could score. Kept in training because it is free: it follows the
        # attack's steps, and the twin enters the objective as a constant (its zero derivative is never taken).
        wavs = self.attack.perturb(
            brain.waveform_model,
            batch.sig.data,
            targets,
            loss_scale=brain.attack_loss_scale(),
            wav_lens=batch.sig.lengths,
        )
        return brain.compute_features(wavs).detach()

    def fake_forward(self, brain, batch, feats, targets, gradient):
        """The fake branch: the step's one forward through DDP."""
        return brain.modules.model(self.fake_inputs(brain, batch, feats, targets, gradient))

    def input_gradient(self, brain, feats, logits, targets):
        """The attack's input gradient at ``feats``, or None if the attack would not use it.

        A train-mode attack takes it from the training forward (whose graph
        is kept for the parameters' backward); an eval-mode one from its own
        pass. (PGD with a random start takes its first gradient elsewhere: None.)
        """
        attack = self.attack
        # A waveform attack's gradient is at the samples, which the training forward does not reach.
        if attack.domain != "features" or not (isinstance(attack, GradientAttack) and attack.uses_given_gradient):
            return None
        if attack.model_mode == "train":
            labels = attack.labels(logits, targets)
            return attack.gradient_from_logits(logits, feats, labels, brain.attack_loss_scale(), retain_graph=True)
        gradient, _ = attack.input_gradient(brain.model, feats, targets, loss_scale=brain.attack_loss_scale())
        return gradient

    def real_term(self, brain, logits, targets):
        """``w * L(x)`` as ``fit_batch`` backpropagates a loss (scaled), for an early backward."""
        return brain.scaled(self.objective.real_weight * classification_loss(logits, targets))


class FusedAdversarialStep(AdversarialStep):
    """One backward of ``w * L(x)`` gives the parameter gradients *and* the attack's input gradient.

    It needs a train-mode feature attack on the target labels that uses the
    given gradient (so that the gradient of ``L(x)`` is the attack's; a
    waveform attack's gradient is at the samples, which this backward does
    not reach), ``w > 0``
    (else that gradient is zero) and an objective whose real branch gets
    nothing but ``w * L(x)``. Then the fake forward and its backward: two
    forwards, two backwards, the floor. The real graph is freed before the
    fake forward (lower peak memory).
    """

    def __init__(self, attack, objective, warmup_steps=0):
        super().__init__(attack, objective, warmup_steps)
        if not self.applies(attack, objective):
            raise ValueError(f"{attack!r} and {objective!r} cannot share one backward: use adversarial_step")

    @staticmethod
    def applies(attack, objective):
        return (
            isinstance(attack, GradientAttack)
            and attack.domain == "features"
            and attack.model_mode == "train"
            and attack.label_source == "target"
            and not attack.targeted
            and attack.uses_given_gradient
            and objective.real_weight > 0
            and not objective.couples_real_branch
        )

    def loss(self, brain, predictions, batch):
        targets, feats = brain.targets(batch), predictions["feats"]
        real = (predictions["logits"], predictions["embedding"])
        self.real_term(brain, real[0], targets).backward()  # parameter gradients and feats.grad
        fake = self.fake_forward(brain, batch, feats, targets, gradient=feats.grad)
        return self.objective(detached(real), fake, targets)


class SeparateAdversarialStep(AdversarialStep):
    """The real term ``w * L(x)`` is backpropagated into the parameters alone, before the fake forward.

    The attack's input gradient comes from the training forward (train mode)
    or from the attack's own pass (eval mode, the authors'). The real graph is
    freed before the fake forward (lower peak memory); ``fit_batch``'s
    backward covers the fake branch.
    """

    def __init__(self, attack, objective, warmup_steps=0):
        super().__init__(attack, objective, warmup_steps)
        if objective.couples_real_branch:
            raise ValueError(f"{objective!r} sends more than w * L(x) into the real branch: use adversarial_step")

    def loss(self, brain, predictions, batch):
        targets, feats = brain.targets(batch), predictions["feats"]
        real = (predictions["logits"], predictions["embedding"])
        real_term = self.real_term(brain, real[0], targets)
        gradient = self.input_gradient(brain, feats, real[0], targets)
        real_term.backward(inputs=[p for p in brain.modules.parameters() if p.requires_grad])
        fake = self.fake_forward(brain, batch, feats, targets, gradient)
        return self.objective(detached(real), fake, targets)


class CoupledAdversarialStep(AdversarialStep):
    """Both branches go through ``fit_batch``'s single backward.

    For objectives that send gradient into the real branch through the fake
    one (the similarity distance ``d(v, v')``): a separate real-branch
    backward after the DDP-wrapped fake forward would be reduced on its own,
    and the ranks would drift. (With a train-mode attack, that backward also
    recomputes the input gradient, which cannot be excluded from it.)
    """

    def loss(self, brain, predictions, batch):
        targets, feats = brain.targets(batch), predictions["feats"]
        real = (predictions["logits"], predictions["embedding"])
        gradient = self.input_gradient(brain, feats, real[0], targets)
        fake = self.fake_forward(brain, batch, feats, targets, gradient)
        return self.objective(real, fake, targets)


def adversarial_step(attack, objective, warmup_steps=0):
    """The cheapest step computing ``objective(real, attack's fake)``: fused, else separate, else coupled.

    A waveform attack is never fused (its gradients are at the samples, which
    the training forward does not reach): the separate step, or the coupled
    one when the objective couples the branches (similarity, TRADES).

    Example
    -------
    >>> from ser_adv_brain.attacks import FGSM
    >>> from ser_adv_brain.objectives import VanillaAdversarialObjective
    >>> fgsm = FGSM(eps=0.02, label_source="target", model_mode="train")
    >>> type(adversarial_step(fgsm, VanillaAdversarialObjective(0.5))).__name__
    'FusedAdversarialStep'
    >>> type(adversarial_step(FGSM(eps=0.02), VanillaAdversarialObjective(0.5))).__name__
    'SeparateAdversarialStep'
    >>> from ser_adv_brain.attacks import WaveformPGD
    >>> waveform = WaveformPGD(eps=40.0, steps=5, label_source="target", model_mode="train")
    >>> type(adversarial_step(waveform, VanillaAdversarialObjective(0.5))).__name__
    'SeparateAdversarialStep'
    """
    check_arguments(attack, objective, warmup_steps)
    if objective.couples_real_branch:
        return CoupledAdversarialStep(attack, objective, warmup_steps)
    if FusedAdversarialStep.applies(attack, objective):
        return FusedAdversarialStep(attack, objective, warmup_steps)
    return SeparateAdversarialStep(attack, objective, warmup_steps)
