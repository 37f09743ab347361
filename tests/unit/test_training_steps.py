"""The training steps (``ser_adv_brain.training_steps``) as the Brain runs them: choice, plug-ins, BN statistics."""

import pytest
import torch
from helpers import RecipeBrain
from test_brain import RUN_OPTS, build

from ser_adv_brain.attacks import FGSM, PGD
from ser_adv_brain.objectives import VanillaAdversarialObjective
from ser_adv_brain.training.brain import build_brain
from ser_adv_brain.training_steps import (
    CleanStep,
    CoupledAdversarialStep,
    FusedAdversarialStep,
    SeparateAdversarialStep,
    adversarial_step,
)


def batches_tracked(model):
    return {name: int(m.num_batches_tracked) for name, m in model.named_modules() if hasattr(m, "num_batches_tracked")}


# (yaml, overrides, step class the yaml's adversarial_step picks)
STEP_CHOICES = [
    ("cnn4_single", {}, CleanStep),
    ("cnn4_vanilla", {"attack_labels": "target", "attack_mode": "train"}, FusedAdversarialStep),
    ("cnn4_vanilla", {}, SeparateAdversarialStep),
    ("cnn4_similarity", {"attack_mode": "train"}, CoupledAdversarialStep),
]


@pytest.mark.parametrize("name, overrides, step_class", STEP_CHOICES)
def test_each_step_updates_batchnorm_statistics_with_its_training_forwards_only(
    tiny_hparams, name, overrides, step_class
):
    """Clean: one training forward; adversarial: the real and the fake one. The attack's passes
    (here also three train-mode PGD steps) leave the statistics alone."""
    hparams = tiny_hparams(name, **overrides)
    assert type(hparams["training_step"]) is step_class
    brain, _, batch = build(hparams)
    before = batches_tracked(brain.modules.model)
    brain.fit_batch(batch)
    forwards = 1 if step_class is CleanStep else 2
    assert batches_tracked(brain.modules.model) == {name: n + forwards for name, n in before.items()}


def test_train_mode_pgd_leaves_batchnorm_statistics_alone(tiny_hparams):
    hparams = tiny_hparams("cnn4_vanilla")
    hparams["attack"] = PGD(eps=0.05, steps=3, label_source="target", model_mode="train", seed=1)
    hparams["training_step"] = adversarial_step(hparams["attack"], hparams["objective"])
    brain, _, batch = build(hparams)
    before = batches_tracked(brain.modules.model)
    brain.fit_batch(batch)
    assert batches_tracked(brain.modules.model) == {name: n + 2 for name, n in before.items()}


@pytest.mark.parametrize("model_mode", ["eval", "train"])
def test_every_gradient_of_the_training_attack_is_loss_scaled(tiny_hparams, monkeypatch, model_mode):
    """Under fp16 the attack's input gradients are taken at the GradScaler's scale (a gradient that underflows to
    zero has no sign): every PGD step's, not only the first one's."""
    hparams = tiny_hparams("cnn4_vanilla")
    hparams["attack"] = PGD(eps=0.05, steps=3, random_start=False, label_source="target", model_mode=model_mode)
    hparams["training_step"] = adversarial_step(hparams["attack"], hparams["objective"])
    brain, _, batch = build(hparams)
    monkeypatch.setattr(brain, "attack_loss_scale", lambda: 512.0)
    scales = []
    take_gradient = hparams["attack"].gradient_from_logits
    monkeypatch.setattr(
        hparams["attack"],
        "gradient_from_logits",
        lambda logits, inputs, labels, loss_scale=1.0, **kw: (
            scales.append(loss_scale) or take_gradient(logits, inputs, labels, loss_scale, **kw)
        ),
    )
    brain.fit_batch(batch)
    assert len(scales) >= 2 and set(scales) == {512.0}, scales


class ShiftedCopyStep(SeparateAdversarialStep):
    """A plug-in whose fake data are not an attack: the real features shifted by one."""

    def fake_inputs(self, brain, batch, feats, targets, gradient):
        return feats.detach() + 1.0


def test_a_plugged_in_step_is_what_the_brain_runs(tiny_hparams):
    hparams = tiny_hparams("cnn4_vanilla")
    hparams["training_step"] = ShiftedCopyStep(hparams["attack"], hparams["objective"])
    brain, _, batch = build(hparams)
    inputs = []
    hook = brain.modules.model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    assert torch.isfinite(brain.fit_batch(batch))
    hook.remove()
    real, fake = inputs[0], inputs[-1]
    assert torch.allclose(fake, real + 1.0)
    assert set(brain.train_loss_parts()) == {"real_loss", "fake_loss"}


def test_the_brain_refuses_what_is_not_a_training_step(tiny_hparams):
    hparams = tiny_hparams("cnn4_single")
    hparams["training_step"] = "clean"
    hparams["label_encoder"] = None
    with pytest.raises(TypeError, match="training_step"):
        build_brain(hparams, RUN_OPTS, RecipeBrain)


def test_a_fused_step_is_refused_where_one_backward_cannot_serve_both():
    eval_mode = FGSM(eps=0.02, label_source="target", model_mode="eval")
    with pytest.raises(ValueError, match="adversarial_step"):
        FusedAdversarialStep(eval_mode, VanillaAdversarialObjective(0.5))
