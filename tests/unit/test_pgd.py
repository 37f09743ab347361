"""PGD: FGSM as its one-step case, the budget, restarts, the given gradient, and PGD as the training attack."""

import copy

import pytest
import torch
from test_brain import build

from ser_adv_brain.attacks import FGSM, PGD
from ser_adv_brain.models import CNN4
from ser_adv_brain.training_steps import FusedAdversarialStep, adversarial_step


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = CNN4(n_classes=4, base_channels=2)
    model.train()
    model(torch.randn(8, 20, 8))  # non-trivial running statistics
    return model.eval()


@pytest.mark.parametrize("eps, eta", [(0.05, 0.1), (0.3, 0.1), (0.2, None)])
@pytest.mark.parametrize("label_source", ["predicted", "target"])
@pytest.mark.parametrize("model_mode", ["eval", "train"])
def test_one_step_pgd_without_random_start_is_fgsm(model, eps, eta, label_source, model_mode):
    x, targets = torch.randn(6, 20, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    options = dict(eps=eps, eta=eta, label_source=label_source, model_mode=model_mode)
    pgd = PGD(steps=1, rel_step_size=1.0, random_start=False, **options)
    assert torch.equal(pgd.perturb(model, x, targets), FGSM(**options).perturb(model, x, targets))


def test_one_step_pgd_is_fgsm_targeted(model):
    x = torch.randn(6, 20, 8)
    for target in (2, "least_likely"):
        pgd = PGD(eps=0.05, steps=1, rel_step_size=1.0, random_start=False, target_class=target)
        assert torch.equal(pgd.perturb(model, x, None), FGSM(eps=0.05, target_class=target).perturb(model, x, None))


def linf(delta):
    return delta.flatten(1).abs().amax(dim=1)


def l2(delta):
    return delta.flatten(1).norm(dim=1)


@pytest.mark.parametrize(
    "norm, eps, eta", [("linf", 0.07, None), ("linf", 0.3, 0.1), ("l2", 0.5, None), ("l2", 2.0, 0.1)]
)
@pytest.mark.parametrize("random_start", [True, False])
def test_every_output_lies_inside_its_budget(model, norm, eps, eta, random_start):
    x, targets = 3 * torch.randn(6, 20, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    attack = PGD(
        eps=eps, steps=4, rel_step_size=0.6, norm=norm, eta=eta, random_start=random_start, label_source="target"
    )
    for budget in (eps, eps / 3):
        delta = attack.perturb(model, x, targets, eps=budget) - x
        size = linf(delta) if norm == "linf" else l2(delta)
        assert (size <= budget * (1 + 1e-5)).all()
        if eta is None:
            assert (size > 0.5 * budget).all()  # the attack uses its budget
        else:
            assert (linf(delta) <= eta + 1e-6).all()


def test_more_steps_raise_the_loss(model):
    x, targets = torch.randn(8, 20, 8), torch.tensor([0, 1, 2, 3] * 2)
    loss = torch.nn.functional.cross_entropy
    losses = []
    for steps in (1, 10):
        attack = PGD(eps=0.2, steps=steps, random_start=False, eta=None, label_source="target")
        with torch.no_grad():
            losses.append(loss(model(attack.perturb(model, x, targets))[0], targets))
    assert losses[1] > losses[0]


class SmallMLP(torch.nn.Module):
    """A smooth model with varied predictions and margins: restarts end in different places."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(160, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))

    def forward(self, feats):
        return self.layers(feats.flatten(1)), feats


def test_restarts_keep_each_utterances_worst():
    """Three restarts equal, per utterance, the first of three single runs that succeeds, else the highest loss."""
    torch.manual_seed(0)
    model, x = SmallMLP(), torch.randn(12, 20, 8)
    with torch.no_grad():
        targets = model(x)[0].argmax(dim=-1)
    options = dict(eps=0.02, steps=2, rel_step_size=0.3, eta=None, label_source="target", seed=0)
    combined = PGD(restarts=3, **options).perturb(model, x, targets)
    single = PGD(restarts=1, **options)  # its generator yields the same three starts, one per call
    runs = [single.perturb(model, x, targets) for _ in range(3)]
    with torch.no_grad():
        logits = [model(run)[0] for run in runs]
    kept = []
    for index in range(len(x)):
        fooled = [r for r in range(3) if logits[r][index].argmax() != targets[index]]
        losses = [
            float(torch.nn.functional.cross_entropy(logits[r][index : index + 1], targets[index : index + 1]))
            for r in range(3)
        ]
        expected = fooled[0] if fooled else max(range(3), key=losses.__getitem__)
        assert torch.allclose(combined[index], runs[expected][index], atol=1e-6), index
        kept.append(expected)
    assert len(set(kept)) > 1  # the case exercises the choice


def test_given_gradient_replaces_the_first_one(model):
    x = torch.randn(2, 20, 8)
    bim = PGD(eps=0.05, steps=1, rel_step_size=1.0, random_start=False, eta=None)
    assert bim.uses_given_gradient
    assert torch.allclose(bim.perturb(model, x, None, gradient=torch.ones_like(x)), x + 0.05)
    random_start = PGD(eps=0.05, steps=1, seed=3)
    assert not random_start.uses_given_gradient
    ignored = random_start.perturb(model, x, None, gradient=torch.ones_like(x))
    assert torch.equal(ignored, PGD(eps=0.05, steps=1, seed=3).perturb(model, x, None))


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(restarts=0), "restarts"),
        (dict(restarts=2, random_start=False), "restarts"),
        (dict(norm="l1"), "norm"),
        (dict(rel_step_size=-1.0), "rel_step_size"),
        (dict(eps=-1.0), "eps"),
        (dict(target_class="joy", class_names=["anger", "sadness"]), "target_class 'joy'"),
        (dict(target_class=-2), "target_class"),
    ],
)
def test_invalid_options_are_named(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        PGD(**{"eps": 0.1, **kwargs})


@pytest.mark.parametrize("random_start, fused", [(False, True), (True, False)])
def test_pgd_trains_in_the_adversarial_brain(tiny_hparams, random_start, fused):
    """The Brain reuses its free gradient for the first step only where PGD starts at the clean input."""
    hparams = tiny_hparams("cnn4_vanilla")
    hparams["attack"] = PGD(eps=0.05, steps=3, random_start=random_start, label_source="target", model_mode="train")
    hparams["training_step"] = adversarial_step(hparams["attack"], hparams["objective"], hparams["warmup_steps"])
    brain, _, batch = build(hparams)
    assert isinstance(brain.hparams.training_step, FusedAdversarialStep) is fused
    calls = []
    perturb = hparams["attack"].perturb

    def recording(model, feats, targets, **kwargs):
        model_before = copy.deepcopy(model)
        calls.append((model_before, feats.clone(), targets, perturb(model, feats, targets, **kwargs)))
        return calls[-1][-1]

    hparams["attack"].perturb = recording
    generator = hparams["attack"].generator  # None without random starts
    generator_state = None if generator is None else generator.get_state()
    assert torch.isfinite(brain.fit_batch(batch))
    ((model_before, feats, targets, fake),) = calls
    if generator is not None:
        generator.set_state(generator_state)
    # The same attack computing every gradient itself, on the model as the step found it.
    assert torch.allclose(perturb(model_before, feats, targets), fake, atol=1e-6)
    assert (linf(fake - feats) <= 0.05 + 1e-6).all()


def test_pgd_runs_the_brains_fgsm_curve_costuation(tiny_hparams):
    """Where FGSM evaluates a checkpoint, PGD does: a curve over the yaml's eps grid, eps 0 leaving the input clean."""
    hparams = tiny_hparams("cnn4_single")
    hparams["attack"] = PGD(eps=0.05, steps=2, random_start=False, label_source="target", eta=None)
    brain, datasets, _ = build(hparams)
    confusions = brain.evaluate_under_attack(datasets["test"], hparams["attack"], [0.0, 5.0], max_key=None)
    clean, attacked = confusions[0.0].counts, confusions[5.0].counts
    assert int(clean.sum()) == int(attacked.sum()) == len(datasets["test"])
    recognised = clean.diagonal() > 0  # (the untrained model calls everything one emotion)
    assert (attacked.diagonal()[recognised] == 0).all()  # the attack moved each recognised utterance off its label


def test_stopping_early_takes_its_own_first_gradient(model):
    """``stop_when_fooled`` needs the logits of the first pass, to leave an utterance that the clean input
    already fools where it is: a gradient given by the caller would step it all the same."""
    x, targets = torch.randn(4, 20, 8, generator=torch.Generator().manual_seed(4)), torch.tensor([0, 1, 2, 0])
    attack = PGD(eps=0.05, steps=4, random_start=False, stop_when_fooled=True, eta=None, label_source="target")
    assert not attack.uses_given_gradient
    with torch.no_grad():
        already_fooled = model(x)[0].argmax(-1) != targets
    assert already_fooled.any()  # the case at stake
    gradient, _ = attack.input_gradient(model, x, targets)
    given = attack.perturb(model, x, targets, gradient=gradient)
    assert torch.equal(given, attack.perturb(model, x, targets))
    assert torch.equal(given[already_fooled], x[already_fooled])
