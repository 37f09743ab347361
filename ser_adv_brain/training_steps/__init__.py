"""Training steps: what one optimiser step of training computes, chosen once in the yaml.

The Brain runs every training batch through its ``training_step`` (a
``TrainingStep``): ``forward(brain, batch)`` is the real forward and
``loss(brain, predictions, batch)`` returns the loss and its parts; the Brain
backpropagates ``parts["loss"]`` and steps the optimiser. Each step class says
in its ``loss`` what it computes, in a few lines:

- ``CleanStep``: ``L(x)`` (single training, and the warm-up of adversarial training).
- ``WaveformNoiseStep``, ``FeatureNoiseStep``: ``objective(real, noisy twin)``, the
  paper's noise-augmentation baselines (noise on the audio, or on the log-Mel); with
  ``objective: null``, ``L(noisy copy)`` alone, randomised smoothing's training.
- ``FusedAdversarialStep``, ``SeparateAdversarialStep``, ``CoupledAdversarialStep``:
  ``objective(real, fake)`` with ``fake`` from ``attack``; the same
  objective at three costs. ``adversarial_step(attack, objective,
  warmup_steps)`` picks the cheapest one the attack and objective allow:

  .. code-block:: yaml

      training_step: !apply:ser_adv_brain.training_steps.adversarial_step
          attack: !ref <attack>
          objective: !ref <objective>
          warmup_steps: !ref <warmup_steps>

Adding a way to train
---------------------
- A new attack (``Attack`` on the features: PGD-k, FGSM from a random start,
  a noise draw; or on the waveform: ``WaveformPGD``, ``WaveformKLPGD``, whose
  twin is the log-Mel of the adversarial audio) or a new objective
  (``AdversarialObjective``, e.g. a KL term) needs no new step:
  ``adversarial_step`` picks one from the attack's ``domain``, ``model_mode``,
  ``label_source``, ``targeted``, ``uses_given_gradient`` and the objective's
  ``real_weight`` and ``couples_real_branch``.
- A step whose fake data are not an attack on the features (noise added to
  the waveform, say) subclasses ``AdversarialStep`` and overrides
  ``fake_inputs(brain, batch, feats, targets, gradient)``; a step that
  computes something else subclasses ``TrainingStep``. Either is named in
  the yaml as ``training_step: !new:...``; the Brain is not touched.

What a step must keep (``tests/unit/test_brain.py`` and ``tests/integration/test_ddp.py`` check it):

- one forward through the DDP-wrapped ``brain.modules.model`` per step, so
  that DDP all-reduces once per optimiser step; every other pass uses the
  bare ``brain.model``. Gradients already in ``.grad`` before that forward
  are reduced with it;
- a backward of anything but the returned loss goes through
  ``brain.scaled(loss)`` (loss scaling, gradient accumulation) and, after
  that forward, is not allowed at all;
- passes that make fake data leave the batch-norm statistics as they found
  them (``Attack.generation_mode`` does);
- input gradients are taken with ``brain.attack_loss_scale()`` (fp16).
"""

from ser_adv_brain.training_steps.adversarial import (
    AdversarialStep,
    CoupledAdversarialStep,
    FusedAdversarialStep,
    SeparateAdversarialStep,
    adversarial_step,
)
from ser_adv_brain.training_steps.base import CleanStep, TrainingStep
from ser_adv_brain.training_steps.noise import FeatureNoiseStep, NoiseStep, WaveformNoiseStep

__all__ = [
    "AdversarialStep",
    "CleanStep",
    "CoupledAdversarialStep",
    "FeatureNoiseStep",
    "FusedAdversarialStep",
    "NoiseStep",
    "SeparateAdversarialStep",
    "TrainingStep",
    "WaveformNoiseStep",
    "adversarial_step",
]
