"""What every attack guarantees: mode, BN statistics and parameter gradients untouched; seeded; global RNG untouched."""

import pytest
import torch

from ser_adv_brain.attacks import FGSM, PGD, OverTheAirPGD, SquareAttack, WaveformKLPGD, WaveformPGD
from ser_adv_brain.audio.rooms import SimulatedRooms
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.models import CNN4, WaveformClassifier

ROOMS = []  # the over-the-air attack's rooms, made once in a temporary folder (the fixture below)


@pytest.fixture(scope="module", autouse=True)
def rooms(tmp_path_factory):
    small = dict(length=[3, 4], width=[3, 4], height=[2.5, 3], rt60=[0.1, 0.2], max_rir_seconds=0.02)
    ROOMS.append(SimulatedRooms(str(tmp_path_factory.mktemp("rooms")), n_attack=3, n_held_out=1, **small))
    yield
    ROOMS.clear()


# name -> (factory(model_mode, seed), domain); Square scores in eval mode only.
ATTACKS = {
    "fgsm": (lambda mode, seed: FGSM(eps=0.1, model_mode=mode), "features"),
    "pgd-linf-restarts": (lambda mode, seed: PGD(eps=0.1, steps=2, restarts=2, seed=seed, model_mode=mode), "features"),
    "pgd-l2-least-likely": (
        lambda mode, seed: PGD(eps=1.0, steps=2, norm="l2", target_class="least_likely", seed=seed, model_mode=mode),
        "features",
    ),
    "waveform-snr-restarts": (
        lambda mode, seed: WaveformPGD(eps=20.0, steps=2, restarts=2, seed=seed, model_mode=mode),
        "waveform",
    ),
    "waveform-linf-targeted": (
        lambda mode, seed: WaveformPGD(eps=0.01, norm="linf", steps=2, target_class=1, seed=seed, model_mode=mode),
        "waveform",
    ),
    "waveform-kl-snr": (lambda mode, seed: WaveformKLPGD(eps=20.0, steps=2, seed=seed, model_mode=mode), "waveform"),
    "square": (lambda mode, seed: SquareAttack(eps=0.5, max_queries=15, seed=seed), "features"),
    "over-the-air": (
        lambda mode, seed: OverTheAirPGD(eps=20.0, rooms=ROOMS[0], steps=2, samples=2, seed=seed, model_mode=mode),
        "waveform",
    ),
}
CASES = [(name, mode) for name in ATTACKS for mode in ("eval", "train") if not (name == "square" and mode == "train")]


def classifier(domain):
    """A model with non-trivial BN running statistics, and inputs of its domain."""
    torch.manual_seed(0)
    model = CNN4(n_classes=4, base_channels=2)
    model.train()
    model(torch.randn(8, 24, 20))
    if domain == "features":
        return model, torch.randn(4, 24, 20)
    compute_features, normalizer = LogMel(n_mels=20), FeatureNormalizer(20)
    wavs = 0.1 * torch.randn(4, 23 * 256)
    normalizer.fit([compute_features(wavs)])
    return WaveformClassifier(compute_features, normalizer, model), wavs


@pytest.mark.parametrize("was_training", [True, False])
@pytest.mark.parametrize("name, mode", CASES)
def test_model_comes_back_unchanged(name, mode, was_training):
    factory, domain = ATTACKS[name]
    model, inputs = classifier(domain)
    model.train(was_training)
    buffers = {key: value.clone() for key, value in model.state_dict().items()}
    original = inputs.clone()
    rng_state = torch.random.get_rng_state()
    adversarial = factory(mode, 0).perturb(model, inputs, torch.tensor([0, 1, 2, 3]))
    assert not torch.equal(adversarial, inputs)
    assert torch.equal(inputs, original)
    assert model.training == was_training
    assert all(module.training == was_training for module in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the attack's randomness is its own


@pytest.mark.parametrize("name, mode", CASES)
def test_mixed_submodule_modes_come_back(name, mode):
    factory, domain = ATTACKS[name]
    model, inputs = classifier(domain)
    model.train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    factory(mode, 0).perturb(model, inputs, torch.tensor([0, 1, 2, 3]))
    assert not frozen.training
    assert all(m.training for m in model.modules() if m is not frozen)


@pytest.mark.parametrize("name, mode", CASES)
def test_deterministic_under_a_seed(name, mode):
    factory, domain = ATTACKS[name]
    model, inputs = classifier(domain)
    model.eval()
    targets = torch.tensor([0, 1, 2, 3])
    first = factory(mode, 7).perturb(model, inputs, targets)
    torch.manual_seed(123)  # the global stream does not matter
    assert torch.equal(factory(mode, 7).perturb(model, inputs, targets), first)
    if name not in ("fgsm",):
        assert not torch.equal(factory(mode, 8).perturb(model, inputs, targets), first)


def test_threat_models_group_the_attacks():
    groups = {name: factory("eval", 0).threat_model for name, (factory, _) in ATTACKS.items()}
    assert groups == {
        "fgsm": "features_linf",
        "pgd-linf-restarts": "features_linf",
        "pgd-l2-least-likely": "features_l2",
        "waveform-snr-restarts": "waveform_snr",
        "waveform-linf-targeted": "waveform_linf",
        "waveform-kl-snr": "waveform_snr",
        "square": "features_linf",
        "over-the-air": "waveform_room_snr",
    }
