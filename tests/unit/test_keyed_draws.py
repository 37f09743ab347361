"""Random attacks given utterance keys draw per utterance: a result does not depend on the rest of the batch."""

import pytest
import torch

from ser_adv_brain.attacks import PGD, SquareAttack, WaveformPGD
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.models import CNN4, WaveformClassifier

KEYS = ["03a01Fa", "08b02Wb", "10a05Nc", "16b10Td"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CNN4(n_classes=3, base_channels=2).eval()


def alone_and_together(attack, model, inputs, targets):
    """The attack on the whole batch, and each utterance attacked in a batch of its own."""
    together = attack.perturb(model, inputs, targets, keys=KEYS)
    alone = [
        attack.perturb(model, inputs[i : i + 1], targets[i : i + 1], keys=KEYS[i : i + 1]) for i in range(len(KEYS))
    ]
    return together, torch.cat(alone)


@pytest.mark.parametrize(
    "attack",
    [
        PGD(eps=0.1, steps=2, restarts=3, eta=None, label_source="target", seed=5),
        PGD(eps=0.5, steps=2, norm="l2", eta=None, label_source="target", seed=5),
        SquareAttack(eps=0.1, max_queries=30, p_init=0.3, eta=None, label_source="target", seed=5),
    ],
    ids=["pgd_linf_restarts", "pgd_l2", "square"],
)
def test_a_keyed_utterance_gets_the_same_draws_in_any_batch(attack, model):
    inputs, targets = torch.randn(4, 20, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0])
    together, alone = alone_and_together(attack, model, inputs, targets)
    assert torch.allclose(together, alone, atol=1e-5)
    # Reversed, every utterance still gets its own result.
    order = torch.arange(3, -1, -1)
    reversed_batch = attack.perturb(model, inputs[order], targets[order], keys=[KEYS[i] for i in order])
    assert torch.allclose(reversed_batch, together[order], atol=1e-5)


def test_a_keyed_waveform_attack_gets_the_same_draws_in_any_batch():
    torch.manual_seed(0)
    classifier = WaveformClassifier(LogMel(n_mels=20), FeatureNormalizer(20), CNN4(n_classes=3, base_channels=2)).eval()
    wavs = 0.1 * torch.randn(4, 4000, generator=torch.Generator().manual_seed(2))
    attack = WaveformPGD(eps=30.0, steps=2, restarts=2, label_source="target", seed=5)
    together, alone = alone_and_together(attack, classifier, wavs, torch.tensor([0, 1, 2, 0]))
    assert torch.allclose(together, alone, atol=1.01 / 32768)  # one 16-bit step: float rounding at the grid


def test_keys_seed_the_draws_and_no_keys_advance_the_attacks_generator(model):
    inputs, targets = torch.randn(2, 20, 8), torch.tensor([0, 1])
    attack = PGD(eps=0.1, steps=1, eta=None, label_source="target", seed=5)
    keyed = attack.perturb(model, inputs, targets, keys=KEYS[:2])
    assert torch.equal(keyed, attack.perturb(model, inputs, targets, keys=KEYS[:2]))
    assert not torch.equal(keyed, attack.perturb(model, inputs, targets, keys=KEYS[2:]))
    # Without keys (training), each call draws new starts.
    assert not torch.equal(attack.perturb(model, inputs, targets), attack.perturb(model, inputs, targets))


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: PGD(eps=0.1, steps=1, eta=None, label_source="target", seed=seed),
        lambda seed: SquareAttack(eps=0.1, max_queries=10, p_init=0.3, eta=None, label_source="target", seed=seed),
    ],
    ids=["pgd", "square"],
)
def test_keyed_draws_follow_the_attacks_seed(make, model):
    """Same seed, same draws; another seed, other draws (an evaluation's seed is part of its result)."""
    inputs, targets = torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1])
    first = make(5).perturb(model, inputs, targets, keys=KEYS[:2])
    assert torch.equal(first, make(5).perturb(model, inputs, targets, keys=KEYS[:2]))
    assert not torch.equal(first, make(6).perturb(model, inputs, targets, keys=KEYS[:2]))


def test_each_restart_starts_from_its_own_uniform_point_of_the_ball():
    """Restarts draw from separate keyed streams, each uniform over the whole Linf ball."""
    attack = PGD(eps=0.1, steps=1, restarts=2, eta=None, label_source="target", seed=5)
    inputs = torch.zeros(1, 40, 8)
    starts = [attack.random_point(inputs, 0.1, keys=KEYS[:1], restart=restart) for restart in range(2)]
    assert not torch.equal(starts[0], starts[1])
    for start in starts:
        assert float(start.abs().max()) <= 0.1 + 1e-7
        assert float(start.min()) < -0.09 and float(start.max()) > 0.09  # it reaches both faces
        assert abs(float(start.mean())) < 0.02  # centred on the input
