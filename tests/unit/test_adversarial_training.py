"""Noise baselines, PGD / fast / TRADES adversarial training: formulas, noise levels, the training step.

The steps are built from the yaml files users run (``hparams/cnn4_{raw_noise,
logmel_noise,pgd,fast,trades}.yaml``) at tiny size, and compared with the plain
two-pass computation written out here.
"""

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from test_brain import RUN_OPTS, build, parameters

from ser_adv_brain.attacks import KLPGD
from ser_adv_brain.models import CNN4, WaveformClassifier, takes_waveform
from ser_adv_brain.objectives import SimilarityAdversarialObjective, TRADESObjective
from ser_adv_brain.training_steps import NoiseStep, adversarial_step

REAL_LOGITS = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.5, -1.0]])
FAKE_LOGITS = torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
TARGETS = torch.tensor([0, 1])
REAL_EMB = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
FAKE_EMB = torch.tensor([[1.0, 3.0], [3.0, 4.0]])  # differences (0, 2) and (3, 4)


def softmax(row):
    total = sum(math.exp(v) for v in row)
    return [math.exp(v) / total for v in row]


def hand_kl(real_row, fake_row):
    """KL(p || q) = sum_c p_c log(p_c / q_c), written out."""
    return sum(p * math.log(p / q) for p, q in zip(softmax(real_row), softmax(fake_row)))


def hand_nll(row, target):
    return -math.log(softmax(row)[target])


HAND_KL = [hand_kl(r.tolist(), f.tolist()) for r, f in zip(REAL_LOGITS, FAKE_LOGITS)]
HAND_L_REAL = sum(hand_nll(r.tolist(), int(t)) for r, t in zip(REAL_LOGITS, TARGETS)) / 2
HAND_DISTANCES = {"mse": (0 + 4 + 9 + 16) / 4, "l1": ((0 + 2) + (3 + 4)) / 2, "l2": (2.0 + 5.0) / 2}


@pytest.mark.parametrize("beta", [0.0, 1.0, 6.0])
def test_trades_objective_is_the_formula(beta):
    parts = TRADESObjective(beta=beta)((REAL_LOGITS, REAL_EMB), (FAKE_LOGITS, FAKE_EMB), TARGETS)
    assert set(parts) == {"loss", "real_loss", "kl"}
    assert float(parts["real_loss"]) == pytest.approx(HAND_L_REAL)
    assert float(parts["kl"]) == pytest.approx(sum(HAND_KL) / 2)
    assert float(parts["loss"]) == pytest.approx(HAND_L_REAL + beta * sum(HAND_KL) / 2)


@pytest.mark.parametrize("distance", ["mse", "l1", "l2"])
def test_trades_with_the_similarity_distance_is_the_formula(distance):
    objective = TRADESObjective(beta=2.0, distance_weight=0.3, distance=distance)
    parts = objective((REAL_LOGITS, REAL_EMB), (FAKE_LOGITS, FAKE_EMB), TARGETS)
    assert float(parts["distance"]) == pytest.approx(HAND_DISTANCES[distance])
    expected = HAND_L_REAL + 2.0 * sum(HAND_KL) / 2 + 0.3 * HAND_DISTANCES[distance]
    assert float(parts["loss"]) == pytest.approx(expected)


def test_trades_kl_trains_both_branches():
    """As in Zhang et al.'s code, p(x) is not a fixed target in the training loss."""
    real, fake = REAL_LOGITS.clone().requires_grad_(True), FAKE_LOGITS.clone().requires_grad_(True)
    TRADESObjective(beta=1.0)((real, None), (fake, None), TARGETS)["kl"].backward()
    assert real.grad.abs().sum() > 0 and fake.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        ({"beta": -1.0}, "beta"),
        ({"distance_weight": float("nan")}, "distance_weight"),
        ({"distance": "cosine"}, "distance"),
    ],
)
def test_trades_objective_checks_its_weights(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        TRADESObjective(**kwargs)


def test_kl_attack_loss_is_the_kl_from_the_clean_prediction():
    attack = KLPGD(eps=0.1)
    labels = attack.labels(REAL_LOGITS, targets=None)
    assert torch.allclose(labels, torch.tensor([softmax(row.tolist()) for row in REAL_LOGITS]))
    assert torch.allclose(attack.loss(FAKE_LOGITS, labels), torch.tensor(HAND_KL))
    assert attack.succeeded(FAKE_LOGITS, labels).tolist() == [True, False]  # top class 0 -> 1; 0 (of a tie) -> 0
    assert attack.succeeded(REAL_LOGITS + 1.0, labels).tolist() == [False, False]


def test_kl_attack_raises_the_kl_beyond_its_random_start():
    torch.manual_seed(0)
    model, x = CNN4(n_classes=7, base_channels=2).eval(), torch.randn(6, 32, 16)
    attack = KLPGD(eps=0.3, steps=5, eta=None, seed=3)
    start = KLPGD(eps=0.3, steps=5, eta=None, seed=3).random_point(x, 0.3)  # the same first draw
    with torch.no_grad():
        clean = attack.labels(model(x)[0], None)
        kl_start, kl_end = (attack.loss(model(inputs)[0], clean) for inputs in (start, attack.perturb(model, x, None)))
    assert (kl_end > kl_start).all()


def test_fast_training_attack_is_fgsm_from_a_random_start(yaml_hparams):
    """``hparams/cnn4_fast.yaml``: ``x0 = x + U(-eps, eps)``, ``x' = P_eps(x0 + 1.25 eps sign(grad L(x0)))``."""
    attack = yaml_hparams("cnn4_fast")["training_attack"]
    eps = attack.eps
    torch.manual_seed(0)
    model, x, targets = CNN4(n_classes=7, base_channels=2).eval(), torch.randn(4, 32, 16), torch.tensor([0, 1, 2, 3])
    start = x + eps * (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(attack.seed)) - 1)
    inputs = start.clone().requires_grad_(True)
    labels = model(x)[0].argmax(dim=-1)  # predicted labels (the yaml's default), at the clean input
    (grad,) = torch.autograd.grad(F.cross_entropy(model(inputs)[0], labels, reduction="sum"), inputs)
    expected = torch.min(torch.max(start + 1.25 * eps * grad.sign(), x - eps), x + eps)
    assert torch.allclose(attack.perturb(model, x, targets), expected, atol=1e-7)
    assert float((expected - x).abs().max()) == pytest.approx(eps, abs=1e-6)  # the step reaches the ball's edge


# --- The noise baselines' level -------------------------------------------------------------


def test_logmel_noise_has_the_fgsm_budgets_rms(tiny_hparams):
    """std = eps: the noise's root mean square is that of the FGSM perturbation (every feature moves by eps)."""
    hparams = tiny_hparams("cnn4_logmel_noise")
    brain, _, batch = build(hparams)
    with torch.no_grad():
        feats = brain.compute_features(batch.sig.data)
    noise = brain.hparams.training_step.fake_inputs(brain, batch, feats, None, None) - feats
    fgsm = hparams["attack"].perturb(brain.model, feats, brain.targets(batch)) - feats
    assert hparams["feature_noise"].std == hparams["attack_eps"] == 0.02
    assert noise.numel() > 8000
    assert float(noise.std()) == pytest.approx(0.02, rel=0.05) and abs(float(noise.mean())) < 0.002
    assert float(noise.pow(2).mean().sqrt()) == pytest.approx(float(fgsm.pow(2).mean().sqrt()), rel=0.05)


def noisy_audio(brain, batch):
    """The waveforms that the noise step feeds to the log-Mel."""
    seen = []
    hook = brain.modules.compute_features.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        brain.hparams.training_step.fake_inputs(brain, batch, None, None, None)
    hook.remove()
    (audio,) = seen
    return audio


def snr(signal, noise):
    return 20 * torch.log10(signal.norm(dim=1) / noise.norm(dim=1))


@pytest.mark.parametrize("level", [20.0, 40.0])
def test_raw_audio_noise_has_the_requested_snr(tiny_hparams, level):
    """SpeechBrain's AddNoise scales the clean audio by 1 - f, f = 1 / (10^(S/20) + 1), and adds
    white noise S dB below it."""
    brain, _, batch = build(tiny_hparams("cnn4_raw_noise", noise_snr_low=level, noise_snr_high=level))
    clean, noisy = batch.sig.data, noisy_audio(brain, batch)
    kept = clean * (1 - 1 / (10 ** (level / 20) + 1))
    assert torch.allclose(snr(kept, noisy - kept), torch.full((len(clean),), level), atol=1e-3)


def test_raw_audio_noise_snr_lies_in_the_yaml_range(tiny_hparams):
    hparams = tiny_hparams("cnn4_raw_noise", batch_size=8)
    noise = hparams["waveform_noise"]
    assert (noise.snr_low, noise.snr_high) == (hparams["noise_snr_low"], hparams["noise_snr_high"]) == (20, 40)
    brain, _, batch = build(hparams)
    clean, noisy = batch.sig.data, noisy_audio(brain, batch)
    # The clean part's scale, by projection (white noise is all but orthogonal to the audio).
    scale = (noisy * clean).sum(dim=1, keepdim=True) / clean.pow(2).sum(dim=1, keepdim=True)
    realised = snr(scale * clean, noisy - scale * clean)
    assert ((realised > 19.9) & (realised < 40.1)).all() and float(realised.max() - realised.min()) > 1.0


# --- The training step equals the plain two-pass computation ---------------------------------

NOISE_SEED = 11


def formula(spec, real, fake, targets):
    """The objective and its parts, written out from its weights (not the objectives' code)."""
    real_loss, fake_loss = F.cross_entropy(real[0], targets), F.cross_entropy(fake[0], targets)
    diff = real[1] - fake[1]
    distances = {"mse": diff.pow(2).mean(), "l1": diff.abs().sum(-1).mean(), "l2": diff.pow(2).sum(-1).sqrt().mean()}
    kind = spec["kind"]
    if kind == "vanilla":
        alpha = spec["alpha"]
        return {"loss": alpha * real_loss + (1 - alpha) * fake_loss, "real_loss": real_loss, "fake_loss": fake_loss}
    if kind == "similarity":
        distance = distances[spec["distance"]]
        loss = spec["beta"] * real_loss + spec["gamma"] * fake_loss + (1 - spec["beta"] - spec["gamma"]) * distance
        return {"loss": loss, "real_loss": real_loss, "fake_loss": fake_loss, "distance": distance}
    p, q = F.softmax(real[0], dim=-1), F.softmax(fake[0], dim=-1)
    kl = (p * (p.log() - q.log())).sum(-1).mean()
    parts = {"loss": real_loss + spec["beta"] * kl, "real_loss": real_loss, "kl": kl}
    if spec["distance_weight"]:
        parts["distance"] = distances[spec["distance"]]
        parts["loss"] = parts["loss"] + spec["distance_weight"] * parts["distance"]
    return parts


def plain_fake(brain, hparams, model, batch, feats, targets):
    """The fake input, made on a copy of the model (its BN statistics are not the reference's)."""
    if "feature_noise" in hparams:
        return feats + hparams["feature_noise_std"] * torch.randn_like(feats)
    if "waveform_noise" in hparams:
        return brain.compute_features(hparams["waveform_noise"](batch.sig.data, batch.sig.lengths))
    attack = hparams["training_attack"]
    state = None if attack.generator is None else attack.generator.get_state()
    if attack.domain == "waveform" and takes_waveform(model):  # the adversarial audio itself, padding left out
        fake = attack.perturb(copy.deepcopy(model), batch.sig.data, targets, wav_lens=batch.sig.lengths)
    elif attack.domain == "waveform":  # the log-Mel of the adversarial audio, padding left out
        front_end = WaveformClassifier(brain.modules.compute_features, brain.modules.normalizer, copy.deepcopy(model))
        fake = brain.compute_features(attack.perturb(front_end, batch.sig.data, targets, wav_lens=batch.sig.lengths))
    else:
        fake = attack.perturb(copy.deepcopy(model), feats, targets)
    if state is not None:
        attack.generator.set_state(state)  # the Brain's step draws the same random start
    return fake


def plain_two_pass(brain, hparams, spec, batch):
    """Real forward, fake input, fake forward, one backward of the objective; on a copy of the model."""
    model = copy.deepcopy(brain.modules.model).train()
    with torch.no_grad():
        feats = brain.compute_features(batch.sig.data)
    targets = batch.emo_encoded.data.view(-1)
    real = model(feats)
    torch.manual_seed(NOISE_SEED)
    with torch.no_grad():
        fake_inputs = plain_fake(brain, hparams, model, batch, feats, targets)
    parts = formula(spec, real, model(fake_inputs), targets)
    parts["loss"].backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return grads, {k: float(v.detach()) for k, v in parts.items()}, dict(model.named_buffers())


TRAIN_MODE = {"attack_labels": "target", "attack_mode": "train"}  # Madry's and Wong's: true labels, train mode
# (yaml, overrides, objective replacing the yaml's, or None; the formula's weights)
STEP_CASES = [
    ("cnn4_pgd", {"alpha": 0.3}, None, {"kind": "vanilla", "alpha": 0.3}),
    (
        "cnn4_pgd",
        {**TRAIN_MODE, "training_steps": 2},
        SimilarityAdversarialObjective(0.3, 0.5),
        {"kind": "similarity", "beta": 0.3, "gamma": 0.5, "distance": "mse"},
    ),
    ("cnn4_fast", {**TRAIN_MODE, "alpha": 0.3}, None, {"kind": "vanilla", "alpha": 0.3}),
    (
        "cnn4_fast",
        {},
        SimilarityAdversarialObjective(0.6, 0.1, "l2"),
        {"kind": "similarity", "beta": 0.6, "gamma": 0.1, "distance": "l2"},
    ),
    ("cnn4_trades", {"trades_beta": 2.0}, None, {"kind": "trades", "beta": 2.0, "distance_weight": 0.0}),
    (
        "cnn4_trades",
        {"attack_mode": "train", "distance_weight": 0.5, "distance": "l1"},
        None,
        {"kind": "trades", "beta": 6.0, "distance_weight": 0.5, "distance": "l1"},
    ),
    ("cnn4_logmel_noise", {"alpha": 0.3}, None, {"kind": "vanilla", "alpha": 0.3}),
    ("cnn4_raw_noise", {"alpha": 0.3}, None, {"kind": "vanilla", "alpha": 0.3}),
    (
        "cnn4_raw_noise",
        {},
        SimilarityAdversarialObjective(0.3, 0.5, "l1"),
        {"kind": "similarity", "beta": 0.3, "gamma": 0.5, "distance": "l1"},
    ),
]


@pytest.mark.parametrize(
    "name, overrides, objective, spec",
    STEP_CASES,
    ids=[f"{c[0]}-{'-'.join(map(str, c[1].values()))}-{c[3]['kind']}" for c in STEP_CASES],
)
def test_training_step_equals_the_plain_two_pass_computation(tiny_hparams, name, overrides, objective, spec):
    """One ``fit_batch`` with plain SGD moves the parameters by ``lr *`` the plain gradient, and leaves
    the BN statistics where the two training forwards put them: the attack never updates them."""
    lr = 1000.0  # large, so that the parameter change carries the gradient's digits
    hparams = tiny_hparams(name, attack_eps=0.05, **overrides)
    step = hparams["training_step"]
    if objective is not None:  # the same step, with another objective
        hparams["training_step"] = (
            type(step)(step.noise, objective, step.warmup_steps)
            if isinstance(step, NoiseStep)
            else adversarial_step(step.attack, objective, step.warmup_steps)
        )
    hparams["opt_class"] = functools.partial(torch.optim.SGD, lr=lr)
    brain, _, batch = build(hparams, {**RUN_OPTS, "max_grad_norm": 1e12})
    expected, expected_parts, expected_buffers = plain_two_pass(brain, hparams, spec, batch)
    before = parameters(brain)
    torch.manual_seed(NOISE_SEED)
    loss = brain.fit_batch(batch)
    for param_name, param in brain.modules.model.named_parameters():
        step = (before[param_name] - param.detach()) / lr
        assert torch.allclose(step, expected[param_name], rtol=1e-3, atol=1e-6), param_name
    for buffer_name, buffer in brain.modules.model.named_buffers():
        assert torch.allclose(buffer, expected_buffers[buffer_name], rtol=1e-5, atol=1e-7), buffer_name
    assert float(loss) == pytest.approx(expected_parts.pop("loss"), rel=1e-4)
    assert brain.train_loss_parts() == pytest.approx(expected_parts, rel=1e-4)
