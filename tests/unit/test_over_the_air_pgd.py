"""The over-the-air attack (EOT through simulated rooms): its gradient is the mean over the rooms it samples, it
keeps the SNR budget after 16-bit rounding, it draws per utterance, and it never hears a held-out room; the
evaluation hears only held-out rooms."""

import pytest
import torch
import torch.nn.functional as F

from ser_adv_brain.attacks import OverTheAirPGD
from ser_adv_brain.audio.pcm import quantize_pcm16
from ser_adv_brain.audio.rooms import SimulatedRooms
from ser_adv_brain.evaluation import over_the_air
from ser_adv_brain.evaluation.over_the_air import recorded_in_held_out_rooms
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.models import CNN4, WaveformClassifier

SMALL = dict(length=[3, 4], width=[3, 4], height=[2.5, 3], rt60=[0.1, 0.2], max_rir_seconds=0.02)
LENGTH = 2000


class Linear(torch.nn.Module):
    """Logits linear in the waveform: ``x @ A``; the room is linear too, so every gradient is known exactly."""

    def __init__(self, n_classes=3):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(LENGTH, n_classes, generator=torch.Generator().manual_seed(0)))

    def forward(self, wavs):
        return wavs @ self.weight, wavs


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    return SimulatedRooms(str(tmp_path_factory.mktemp("rooms")), n_attack=4, n_held_out=2, **SMALL)


@pytest.fixture
def wavs():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, LENGTH, generator=generator) * torch.tensor([[0.02], [0.1], [0.3]])


@pytest.fixture
def classifier():
    compute_features, normalizer = LogMel(n_mels=20), FeatureNormalizer(20)
    normalizer.fit([compute_features(0.2 * torch.randn(4, LENGTH, generator=torch.Generator().manual_seed(2)))])
    torch.manual_seed(0)
    return WaveformClassifier(compute_features, normalizer, CNN4(n_classes=4, base_channels=2)).eval()


def test_the_eot_gradient_is_the_mean_of_each_sampled_rooms_gradient(rooms, wavs):
    model, labels = Linear(), torch.tensor([0, 2, 1])
    attack = OverTheAirPGD(eps=30.0, rooms=rooms, samples=3, seed=5)
    attack.keys = None
    sampled, noise = attack.draw_rooms(len(wavs), LENGTH)
    assert sampled.shape == (3, 3) and noise.shape == (3, 3, LENGTH)
    assert len(set(sampled.flatten().tolist())) > 1  # several rooms, or the mean would not be tested
    eot = attack.eot_gradient(model, wavs, labels, sampled, noise)
    bank = rooms.bank("attack")
    for b in range(len(wavs)):
        one_by_one = []
        for s in range(3):
            x = wavs[b : b + 1].clone().requires_grad_(True)
            heard = bank.play(x, sampled[b, s : s + 1], noise[b, s : s + 1])
            (grad,) = torch.autograd.grad(F.cross_entropy(model(heard)[0], labels[b : b + 1]), x)
            one_by_one.append(grad[0])
        # float32 FFTs of a batch and of one row round differently (about 1e-5 here, on gradients of order 1)
        assert torch.allclose(eot[b], torch.stack(one_by_one).mean(0), rtol=1e-4, atol=1e-4)


def test_each_step_samples_new_rooms_and_the_step_follows_their_gradient(rooms, wavs, monkeypatch):
    model = Linear()
    attack = OverTheAirPGD(eps=20.0, rooms=rooms, samples=2, steps=2, random_start=False, rel_step_size=0.5)
    seen = []
    eot = attack.eot_gradient
    monkeypatch.setattr(attack, "eot_gradient", lambda *a, **k: seen.append(a[3]) or eot(*a, **k))
    out = attack.run(model, wavs, torch.tensor([0, 1, 2]), keys=["a", "b", "c"])
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])
    assert (out.snr_db >= 20.0).all() and not torch.equal(out.wavs, quantize_pcm16(wavs))


@pytest.mark.parametrize("snr", [40.0, 10.0])
def test_snr_budget_holds_after_16_bit_rounding(rooms, wavs, classifier, snr):
    out = OverTheAirPGD(eps=snr, rooms=rooms, samples=2, steps=3).run(classifier, wavs, None)
    scaled = out.wavs.double() * 32768
    assert torch.equal(scaled, scaled.round())
    clean = quantize_pcm16(wavs).double()
    realised = 10 * torch.log10(clean.pow(2).sum(1) / (out.wavs.double() - clean).pow(2).sum(1))
    assert torch.allclose(out.snr_db, realised)
    assert (realised >= snr).all() and (realised < snr + 3.0).all()


def test_an_utterances_rooms_and_noise_do_not_depend_on_its_batch(rooms, wavs, classifier):
    attack = OverTheAirPGD(eps=20.0, rooms=rooms, samples=2, steps=2, seed=3)
    together = attack.run(classifier, wavs, torch.tensor([0, 1, 2]), keys=["a", "b", "c"]).wavs
    alone = attack.run(classifier, wavs[2:], torch.tensor([2]), keys=["c"]).wavs
    reordered = attack.run(classifier, wavs[[2, 0]], torch.tensor([2, 0]), keys=["c", "a"]).wavs
    assert torch.equal(alone[0], together[2]) and torch.equal(reordered[0], together[2])
    assert torch.equal(reordered[1], together[0])


def test_the_attack_never_hears_a_held_out_room(tmp_path, wavs, classifier):
    rooms = SimulatedRooms(str(tmp_path), n_attack=2, n_held_out=2, **SMALL)
    rooms.bank("held_out").rirs.fill_(float("nan"))  # any use of a held-out room would poison the audio
    out = OverTheAirPGD(eps=20.0, rooms=rooms, samples=2, steps=2).run(classifier, wavs, None)
    assert torch.isfinite(out.wavs).all() and (out.snr_db >= 20.0).all()


def test_the_evaluation_hears_only_the_held_out_rooms(tmp_path, wavs):
    rooms = SimulatedRooms(str(tmp_path), n_attack=2, n_held_out=2, **SMALL)
    held_out = rooms.bank("held_out")
    rooms.bank("attack").rirs.fill_(float("nan"))
    recorded = recorded_in_held_out_rooms(rooms, wavs, ["a", "b", "c"])
    assert recorded.shape == (2, 3, LENGTH) and torch.isfinite(recorded).all()
    # Room by room, what held-out room k records; the same noise for the same utterance in any batch.
    alone = recorded_in_held_out_rooms(rooms, wavs[1:2], ["b"])
    assert torch.equal(alone[:, 0], recorded[:, 1])
    for k in range(2):
        dry = quantize_pcm16(held_out.play(wavs, torch.full((3,), k), torch.zeros_like(wavs)))
        assert (recorded[k] - dry).abs().max() < 0.1 * wavs.abs().max()  # the background is well below the speech


def test_an_utterance_is_scored_in_its_worst_held_out_room(rooms, wavs, monkeypatch):
    # Held-out room k records utterance u as the constant table[k][u], which the model predicts as that class.
    table = torch.tensor([[0, 1, 2], [0, 2, 2], [0, 1, 0]])
    recorded = table.unsqueeze(-1).expand(3, 3, LENGTH).float()
    monkeypatch.setattr(over_the_air, "recorded_in_held_out_rooms", lambda *args: recorded)
    model = lambda heard: (F.one_hot(heard[:, 0].long(), 3).float(), heard)  # noqa: E731
    predicted = over_the_air.predicted_in_held_out_rooms(rooms, model, wavs, torch.tensor([0, 1, 2]), None)
    # Right in every room: its prediction; wrong in some: the prediction of the first room that fools it.
    assert predicted.tolist() == [0, 2, 0]


@pytest.mark.parametrize(
    "kwargs, culprit",
    [({"samples": 0}, "samples"), ({"rooms": "rooms.csv"}, "rooms"), ({"eps": float("nan")}, "eps")],
)
def test_invalid_options_are_named(rooms, kwargs, culprit):
    with pytest.raises((ValueError, TypeError), match=culprit):
        OverTheAirPGD(**{"eps": 30.0, "rooms": rooms, **kwargs})


def test_it_declares_its_threat_model_and_its_rooms(rooms):
    attack = OverTheAirPGD(eps=30.0, rooms=rooms, steps=5)
    assert attack.threat_model == "waveform_room_snr" and attack.rooms is rooms
    assert attack.random and attack.kind == "iterative" and attack.name == "OverTheAirPGD-5"
    assert attack.reports == ("snr_db",) and not attack.uses_given_gradient


def test_every_setting_is_kept(rooms):
    names = ["neutral", "anger", "fear", "sadness"]
    attack = OverTheAirPGD(
        eps=30.0,
        rooms=rooms,
        samples=3,
        steps=7,
        rel_step_size=0.3,
        random_start=False,
        seed=9,
        label_source="target",
        model_mode="train",
        target_class="fear",
        class_names=names,
    )
    assert repr(attack) == (
        "OverTheAirPGD(eps=30.0, eta=None, label_source='target', model_mode='train', target_class='fear', "
        f"steps=7, rel_step_size=0.3, norm='snr', random_start=False, restarts=1, seed=9, samples=3, rooms={rooms!r})"
    )
    assert attack.target_index == 2 and attack.class_names == names
    assert OverTheAirPGD(eps=30.0, rooms=rooms, random_start=True).random_start is True


def test_the_true_labels_are_attacked_and_the_padding_is_left_alone(rooms, wavs, classifier):
    attack = OverTheAirPGD(eps=20.0, rooms=rooms, samples=2, steps=2, label_source="target")
    padded = torch.cat([wavs, torch.zeros(3, 500)], dim=1)
    wav_lens = torch.full((3,), LENGTH / padded.shape[1])
    out = attack.run(classifier, padded, torch.tensor([0, 1, 2]), wav_lens=wav_lens)
    assert not out.wavs[:, LENGTH:].any() and (out.wavs[:, :LENGTH] != quantize_pcm16(wavs)).any()
    with pytest.raises(ValueError, match="pass targets"):
        attack.run(classifier, wavs, None)


def test_keyed_rooms_follow_the_seed_and_every_attack_room_is_drawn(rooms):
    def drawn(seed):
        attack = OverTheAirPGD(eps=30.0, rooms=rooms, samples=3, seed=seed)
        attack.keys, attack.step_index = [f"u{i}" for i in range(40)], 0
        return attack.draw_rooms(40, 16)[0]

    assert torch.equal(drawn(3), drawn(3)) and not torch.equal(drawn(3), drawn(4))
    assert set(drawn(3).flatten().tolist()) == set(range(rooms.size("attack")))
