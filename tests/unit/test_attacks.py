"""FGSM: the formula, the eta clip, the label source, the model mode, untouched BatchNorm statistics."""

import pytest
import torch

from ser_adv_brain.attacks import FGSM, GradientAttack
from ser_adv_brain.models import CNN4


class TwoClassLinear(torch.nn.Module):
    """logits = W x: the sign of the input gradient of the CE loss for label c is sign(w_other - w_c)."""

    def __init__(self, weight):
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[1], 2, bias=False)
        self.linear.weight.data.copy_(weight)
        self.modes_seen = []

    def forward(self, feats):
        self.modes_seen.append(self.training)
        flat = feats.flatten(1)
        return self.linear(flat), flat


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return TwoClassLinear(torch.randn(2, 12))


def predicted_class_and_input(model, wanted):
    """An input the linear model classifies as ``wanted``."""
    direction = model.linear.weight[wanted] - model.linear.weight[1 - wanted]
    return (direction / direction.norm()).reshape(1, 3, 4).detach()


def expected_direction(model, label):
    w = model.linear.weight.detach()
    return torch.sign(w[1 - label] - w[label]).reshape(1, 3, 4)


@pytest.mark.parametrize("eps", [0.02, 0.1, 0.3])
def test_fgsm_is_the_formula(linear, eps):
    x = predicted_class_and_input(linear, 0)
    x_adv = FGSM(eps=eps, eta=None).perturb(linear, x, targets=None)
    assert torch.allclose(x_adv, x + eps * expected_direction(linear, 0))
    # And the attack works: the loss on the predicted class goes up.
    loss = torch.nn.functional.cross_entropy
    assert loss(linear(x_adv)[0], torch.tensor([0])) > loss(linear(x)[0], torch.tensor([0]))


def test_eta_clips_the_perturbation(linear):
    x = predicted_class_and_input(linear, 0)
    clipped = FGSM(eps=0.5, eta=0.1).perturb(linear, x, targets=None)
    assert torch.allclose(clipped, x + 0.1 * expected_direction(linear, 0))
    unclipped = FGSM(eps=0.05, eta=0.1).perturb(linear, x, targets=None)
    assert torch.allclose(unclipped, x + 0.05 * expected_direction(linear, 0))


def test_no_clamp_to_unit_interval(linear):
    # Far outside [0, 1], as z-scored features are, along a direction the logit margin ignores.
    d = (linear.linear.weight[0] - linear.linear.weight[1]).detach()
    offset = torch.ones(12) - (d.sum() / d.dot(d)) * d
    x = predicted_class_and_input(linear, 0) + 3.0 * offset.reshape(1, 3, 4)
    assert x.abs().max() > 2
    x_adv = FGSM(eps=0.1).perturb(linear, x, targets=None)
    assert torch.allclose(x_adv, x + 0.1 * expected_direction(linear, 0))


def test_eps_zero_returns_the_input(linear):
    x = torch.randn(4, 3, 4)
    assert torch.equal(FGSM(eps=0.0).perturb(linear, x, targets=None), x)
    assert torch.equal(FGSM(eps=0.3).perturb(linear, x, targets=None, eps=0.0), x)


def test_label_source(linear):
    """The model predicts 0, the target is 1: the two sources attack in opposite directions."""
    x = predicted_class_and_input(linear, 0)
    targets = torch.tensor([1])
    assert int(linear(x)[0].argmax()) == 0
    predicted = FGSM(eps=0.1, eta=None, label_source="predicted").perturb(linear, x, targets)
    target = FGSM(eps=0.1, eta=None, label_source="target").perturb(linear, x, targets)
    assert torch.allclose(predicted, x + 0.1 * expected_direction(linear, 0))
    assert torch.allclose(target, x + 0.1 * expected_direction(linear, 1))
    assert torch.allclose(predicted - x, -(target - x))


def test_labels():
    logits, targets = torch.tensor([[0.0, 3.0], [2.0, 1.0]]), torch.tensor([0, 0])
    assert FGSM(0.1, label_source="predicted").labels(logits, targets).tolist() == [1, 0]
    assert FGSM(0.1, label_source="target").labels(logits, targets).tolist() == [0, 0]


@pytest.mark.parametrize("model_mode", ["eval", "train"])
@pytest.mark.parametrize("was_training", [True, False])
def test_model_mode_is_used_then_restored(linear, model_mode, was_training):
    linear.train(was_training)
    FGSM(eps=0.1, model_mode=model_mode).perturb(linear, torch.randn(2, 3, 4), torch.tensor([0, 1]))
    assert linear.modes_seen == [model_mode == "train"]
    assert linear.training == was_training


@pytest.mark.parametrize("model_mode", ["eval", "train"])
@pytest.mark.parametrize("was_training", [True, False])
def test_batchnorm_statistics_and_parameters_untouched(model_mode, was_training):
    torch.manual_seed(0)
    model = CNN4(base_channels=2)
    model.train()
    model(torch.randn(4, 20, 8))  # non-trivial running statistics
    model.train(was_training)
    before = {name: b.clone() for name, b in model.named_buffers()}
    x = torch.randn(4, 20, 8)
    x_adv = FGSM(eps=0.1, model_mode=model_mode).perturb(model, x, torch.tensor([0, 1, 2, 3]))
    assert not torch.equal(x_adv, x)
    assert model.training == was_training
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_train_mode_uses_batch_statistics():
    """Generation in train mode normalises with the batch, in eval mode with the running statistics."""
    torch.manual_seed(0)
    model = CNN4(base_channels=2).eval()
    x, targets = torch.randn(4, 20, 8) * 3 + 1, torch.tensor([0, 1, 2, 3])
    eval_adv = FGSM(eps=0.1, model_mode="eval", label_source="target").perturb(model, x, targets)
    train_adv = FGSM(eps=0.1, model_mode="train", label_source="target").perturb(model, x, targets)
    assert not torch.equal(eval_adv, train_adv)


def test_curve_shares_one_gradient(linear):
    x, targets = torch.randn(3, 3, 4), torch.tensor([0, 1, 1])
    attack = FGSM(eps=0.02)
    grid = [0.0, 0.02, 0.05, 0.1]
    curve = list(attack.curve(linear, x, targets, grid))
    assert len(linear.modes_seen) == 1  # one forward for the whole grid
    assert [eps for eps, _ in curve] == grid
    for eps, x_adv in curve:
        assert torch.equal(x_adv, attack.perturb(linear, x, targets, eps=eps))


def test_given_gradient_is_used(linear):
    x = torch.randn(2, 3, 4)
    gradient = torch.ones_like(x)
    x_adv = FGSM(eps=0.05).perturb(linear, x, None, gradient=gradient)
    assert torch.allclose(x_adv, x + 0.05) and linear.modes_seen == []


def test_loss_scale_keeps_the_sign(linear):
    x = torch.randn(3, 3, 4)
    attack = FGSM(eps=0.05)
    assert torch.equal(attack.perturb(linear, x, None), attack.perturb(linear, x, None, loss_scale=1024.0))


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        (dict(eps=-0.1), "eps"),
        (dict(eps=float("inf")), "eps"),
        (dict(eps=float("nan")), "eps"),
        (dict(eps=0.1, eta=-0.1), "eta"),
        (dict(eps=0.1, label_source="true"), "label_source"),
        (dict(eps=0.1, model_mode="inference"), "model_mode"),
    ],
)
def test_invalid_options_are_named(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        FGSM(**kwargs)


def test_negative_eps_at_call_time(linear):
    with pytest.raises(ValueError, match="eps"):
        FGSM(eps=0.1).perturb(linear, torch.randn(1, 3, 4), None, eps=-0.02)


# ---------------------------------------------------------------- what mutation testing found unchecked


def test_defaults_and_repr():
    attack = FGSM(eps=0.02)
    assert (attack.eta, attack.label_source, attack.model_mode) == (0.1, "predicted", "eval")
    assert repr(attack) == "FGSM(eps=0.02, eta=0.1, label_source='predicted', model_mode='eval')"


def ce_sum_input_gradient(model, x, labels):
    """d/dx of sum_i CE(W x_i, y_i) = W^T (softmax(W x_i) - onehot(y_i)), written out for the linear model."""
    w = model.linear.weight.detach()
    logits = x.flatten(1) @ w.T
    residual = torch.softmax(logits, dim=-1) - torch.nn.functional.one_hot(labels, 2).float()
    return (residual @ w).reshape(x.shape)


@pytest.mark.parametrize("loss_scale", [None, 3.0])
def test_input_gradient_is_the_summed_cross_entropy_gradient_times_the_scale(linear, loss_scale):
    x, targets = torch.randn(3, 3, 4), torch.tensor([0, 1, 1])
    attack = FGSM(eps=0.1, label_source="target")
    kwargs = {} if loss_scale is None else {"loss_scale": loss_scale}
    grad, labels = attack.input_gradient(linear, x, targets, **kwargs)
    assert torch.equal(labels, targets)
    expected = ce_sum_input_gradient(linear, x, targets) * (loss_scale or 1.0)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_gradient_from_logits_frees_the_graph_unless_asked(linear):
    x = torch.randn(2, 3, 4).requires_grad_(True)
    attack, labels = FGSM(eps=0.1), torch.tensor([0, 1])
    logits, _ = linear(x)
    attack.gradient_from_logits(logits, x, labels, retain_graph=True)
    logits.sum().backward()  # the training backward that follows in the Brain's train-mode step
    logits, _ = linear(x)
    grad = attack.gradient_from_logits(logits, x, labels)  # unscaled by default
    assert torch.allclose(grad, ce_sum_input_gradient(linear, x.detach(), labels), atol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        logits.sum().backward()


class Underflowing(torch.nn.Module):
    """logits = W x through float16 scalings by 1e-4 and 4e-4: every input gradient is 2e-8, which
    rounds to 0 in float16 (its smallest step is 6e-8); scaled by 2 or more it keeps its sign."""

    def __init__(self):
        super().__init__()
        signs = torch.tensor([1.0, -1.0, -1.0, 1.0] * 3)
        self.weight = torch.stack([0.5 * signs, -0.5 * signs])

    def forward(self, feats):
        tiny = ((feats.half() * 1e-4) * 4e-4).float().flatten(1)
        return tiny @ self.weight.T, tiny


def test_loss_scale_reaches_the_gradient_in_perturb_and_curve():
    model, x = Underflowing(), torch.randn(2, 3, 4)
    attack = FGSM(eps=0.05, eta=None)
    assert torch.equal(attack.perturb(model, x, None), x)  # unscaled by default: underflow, no step at all
    ((_, curved),) = attack.curve(model, x, None, [0.05])
    assert torch.equal(curved, x)
    assert torch.allclose((attack.perturb(model, x, None, loss_scale=2.0) - x).abs(), torch.full_like(x, 0.05))
    scaled = attack.perturb(model, x, None, loss_scale=1024.0)
    assert torch.allclose((scaled - x).abs(), torch.full_like(x, 0.05))
    ((_, curved),) = attack.curve(model, x, None, [0.05], loss_scale=1024.0)
    assert torch.equal(curved, scaled)


def test_curve_attacks_the_targets_when_asked(linear):
    x, targets = predicted_class_and_input(linear, 0), torch.tensor([1])
    attack = FGSM(eps=0.1, eta=None, label_source="target")
    ((_, x_adv),) = attack.curve(linear, x, targets, [0.1])
    assert torch.allclose(x_adv, x + 0.1 * expected_direction(linear, 1))


def test_a_zero_gradient_moves_nothing(linear):
    x = torch.randn(1, 3, 4)
    gradient = torch.zeros_like(x)
    gradient[0, 0, 0] = -2.0
    x_adv = FGSM(eps=0.05).perturb(linear, x, None, gradient=gradient)
    expected = x.clone()
    expected[0, 0, 0] -= 0.05
    assert torch.equal(x_adv, expected)


class Recorded(FGSM):
    """An attack that keeps the base class's ``curve``: one ``perturb`` call per budget."""

    curve = GradientAttack.curve

    def __init__(self):
        super().__init__(eps=0.3)
        self.calls = []

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None):
        self.calls.append((model, inputs, targets, eps, loss_scale))
        return super().perturb(model, inputs, targets, eps=eps, loss_scale=loss_scale)


def test_base_curve_perturbs_once_per_budget(linear):
    attack, x, targets = Recorded(), torch.randn(2, 3, 4), torch.tensor([0, 1])
    curve = list(attack.curve(linear, x, targets, [0.0, 0.1], loss_scale=8.0))
    assert [eps for eps, _ in curve] == [0.0, 0.1]
    assert attack.calls == [(linear, x, targets, 0.0, 8.0), (linear, x, targets, 0.1, 8.0)]
    list(attack.curve(linear, x, targets, [0.2]))
    assert attack.calls[-1] == (linear, x, targets, 0.2, 1.0)  # unscaled by default
    assert torch.equal(curve[1][1], FGSM(eps=0.1).perturb(linear, x, targets))
