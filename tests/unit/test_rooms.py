"""Simulated rooms: deterministic from the seed, attack, held-out and training sets disjoint, cached, read by
AddReverb, and playing audio through a room is the convolution, the noise at its SNR and the gain it says;
room augmentation records each utterance in a training room."""

import os

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.augment.time_domain import AddReverb

from ser_adv_brain.attacks import OverTheAirPGD
from ser_adv_brain.audio import rooms as rooms_module
from ser_adv_brain.audio.rooms import RoomAugmentation, RoomBank, SimulatedRooms, rir_csv
from ser_adv_brain.objectives import VanillaAdversarialObjective
from ser_adv_brain.tables import read_csv
from ser_adv_brain.training_steps import WaveformNoiseStep

# Small, dry rooms and short responses: a room takes milliseconds to simulate.
SMALL = dict(length=[3, 4], width=[3, 4], height=[2.5, 3], rt60=[0.1, 0.2], max_rir_seconds=0.05)


def simulated(folder, seed=0, n_attack=3, n_held_out=2, **options):
    rooms = SimulatedRooms(str(folder), n_attack=n_attack, n_held_out=n_held_out, seed=seed, **{**SMALL, **options})
    return rooms, {split: rooms.bank(split) for split in ("attack", "held_out")}


def test_rooms_are_the_same_from_the_same_seed_and_differ_from_another(tmp_path):
    _, first = simulated(tmp_path / "a")
    _, again = simulated(tmp_path / "b")
    _, other = simulated(tmp_path / "c", seed=1)
    assert read_csv(tmp_path / "a" / "rooms.csv") == read_csv(tmp_path / "b" / "rooms.csv")
    for split in ("attack", "held_out"):
        assert torch.equal(first[split].rirs, again[split].rirs)
        assert torch.equal(first[split].gain_db, again[split].gain_db)
        assert not torch.equal(first[split].gain_db, other[split].gain_db)


def test_attack_and_held_out_rooms_are_disjoint_and_held_out_ones_do_not_depend_on_the_attack_ones(tmp_path):
    _, banks = simulated(tmp_path / "a", n_attack=3)
    _, more = simulated(tmp_path / "b", n_attack=5)
    assert not set(banks["attack"].ids) & set(banks["held_out"].ids)
    rows = read_csv(tmp_path / "a" / "rooms.csv")
    attack = {(r["length"], r["width"], r["source"]) for r in rows if r["split"] == "attack"}
    held_out = {(r["length"], r["width"], r["source"]) for r in rows if r["split"] == "held_out"}
    assert len(attack) == 3 and len(held_out) == 2 and not attack & held_out
    for a in banks["attack"].rirs:
        assert all(not torch.equal(a, h) for h in banks["held_out"].rirs)
    # Each room has its own draw: more attack rooms leave the held-out ones as they were.
    assert torch.equal(banks["held_out"].rirs, more["held_out"].rirs)
    assert torch.equal(banks["attack"].rirs, more["attack"].rirs[:3, : banks["attack"].rirs.shape[1]])


def test_rooms_are_drawn_within_their_ranges(tmp_path):
    simulated(tmp_path, n_attack=6, distance=[1.0, 1.5], gain_db=[-2, 3])
    for row in read_csv(tmp_path / "rooms.csv"):
        dims = [float(row[f]) for f in ("length", "width", "height")]
        assert 3 <= dims[0] <= 4 and 3 <= dims[1] <= 4 and 2.5 <= dims[2] <= 3
        assert 1.0 <= float(row["distance"]) <= 1.5 and -2 <= float(row["gain_db"]) <= 3
        for device in (row["source"], row["microphone"]):
            x, y, z = map(float, device.split())
            assert 0.5 <= x <= dims[0] - 0.5 and 0.5 <= y <= dims[1] - 0.5 and 1.0 <= z <= 1.8


def test_generating_is_cached_and_new_settings_regenerate(tmp_path, monkeypatch):
    simulated(tmp_path)
    calls = []
    simulate = SimulatedRooms.simulate
    monkeypatch.setattr(SimulatedRooms, "simulate", lambda self, *a: calls.append(a) or simulate(self, *a))
    simulated(tmp_path)
    assert calls == []
    simulated(tmp_path, seed=2)
    assert len(calls) == 5
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_speechbrains_addreverb_reads_the_rooms(tmp_path):
    _, banks = simulated(tmp_path)
    rows = read_csv(rir_csv(str(tmp_path), "held_out"))
    assert [r["ID"] for r in rows] == banks["held_out"].ids
    reverb = AddReverb(
        rir_csv(str(tmp_path), "held_out"), sorting="original", replacements={"rir_folder": str(tmp_path)}
    )
    impulse = torch.zeros(1, 2000)
    impulse[0, 100] = 1.0
    heard = reverb(impulse)  # AddReverb aligns on the direct path too and rescales the level
    rir = banks["held_out"].rirs[0]
    direct = int(rir.abs().argmax())
    tail = rir[direct : direct + 200]
    assert torch.allclose(heard[0, 100 : 100 + len(tail)] / heard[0, 100], tail / tail[0], atol=1e-5)


def test_a_room_convolves_aligned_on_the_direct_path_then_adds_its_noise_and_gain():
    rir = torch.tensor([[0.0, 0.0, 1.0, 0.5, -0.25]])
    bank = RoomBank(["r"], rir, torch.tensor([20.0]), noise_colour=torch.tensor([0.0]), gain_db=torch.tensor([6.0]))
    wavs = torch.randn(1, 64, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 64, generator=torch.Generator().manual_seed(1))
    heard = bank.play(wavs, torch.tensor([0]), noise)
    reverberant = torch.from_numpy(np.convolve(wavs[0].numpy(), rir[0].numpy())[2 : 2 + 64])
    background = heard[0] / 10 ** (6 / 20) - reverberant
    assert torch.allclose(background, noise[0] * background.norm() / noise[0].norm(), atol=1e-5)  # white: as drawn
    snr = 10 * torch.log10(reverberant.pow(2).sum() / background.pow(2).sum())
    assert float(snr) == pytest.approx(20.0, abs=1e-3)


def test_noise_colour_sets_the_slope_of_its_spectrum():
    noise = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0))
    for colour, slope in ((0.0, 0.0), (1.0, -1.0), (2.0, -2.0)):
        power = torch.fft.rfft(rooms_module.coloured(noise, torch.full((64,), colour))).abs().pow(2).mean(0)
        freqs = torch.fft.rfftfreq(4096)
        band = (freqs > 0.01) & (freqs < 0.4)
        fitted = np.polyfit(np.log(freqs[band].numpy()), np.log(power[band].numpy()), 1)[0]
        assert fitted == pytest.approx(slope, abs=0.1)


def test_impossible_ranges_are_named(tmp_path):
    with pytest.raises(ValueError, match="rt60"):
        SimulatedRooms(str(tmp_path), length=[9, 10], width=[9, 10], height=[3, 4], rt60=[0.05, 0.1])
    with pytest.raises(ValueError, match="gain_db"):
        SimulatedRooms(str(tmp_path), gain_db=[6, -6])
    with pytest.raises(ValueError, match="n_held_out"):
        SimulatedRooms(str(tmp_path), n_held_out=-1)
    with pytest.raises(ValueError, match="at least one room"):
        SimulatedRooms(str(tmp_path), n_attack=0, n_held_out=0)
    with pytest.raises(ValueError, match="held_out rooms"):
        OverTheAirPGD(40, rooms=SimulatedRooms(str(tmp_path), n_held_out=0))
    with pytest.raises(ValueError, match="n_train 0"):
        RoomAugmentation(SimulatedRooms(str(tmp_path)))
    with pytest.raises(ValueError, match="distance"):
        simulated(tmp_path, distance=[20, 30])


def test_rir_files_hold_what_the_bank_plays(tmp_path):
    _, banks = simulated(tmp_path)
    audio, rate = soundfile.read(tmp_path / "attack" / "attack_000.wav", dtype="float32")
    assert rate == 16000 and np.linalg.norm(audio) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(banks["attack"].rirs[0, : len(audio)], torch.from_numpy(audio))


def test_training_rooms_are_their_own_and_leave_the_attack_and_held_out_rooms_as_they_were(tmp_path):
    _, banks = simulated(tmp_path / "a")
    rooms, with_training = simulated(tmp_path / "b", n_train=3)
    training = rooms.bank("train")
    assert training.ids == ["train_000", "train_001", "train_002"]
    for split in ("attack", "held_out"):
        assert torch.equal(banks[split].rirs, with_training[split].rirs)
        for heard in with_training[split].rirs:
            assert all(not torch.equal(heard, trained) for trained in training.rirs)
    alone = SimulatedRooms(str(tmp_path / "c"), n_attack=0, n_held_out=0, n_train=3, **SMALL)
    assert torch.equal(alone.bank("train").rirs, training.rirs)  # the same rooms without the other sets
    assert sorted(os.listdir(tmp_path / "c")) == ["rooms.csv", "rooms.json", "train", "train_rirs.csv"]


def test_room_augmentation_records_each_utterance_in_a_training_room_and_keeps_the_padding_silent(tmp_path):
    rooms, _ = simulated(tmp_path, n_train=4)
    wavs = 0.1 * torch.randn(32, 800, generator=torch.Generator().manual_seed(0))
    lengths = torch.ones(32)
    lengths[5] = 0.5
    torch.manual_seed(3)
    heard = RoomAugmentation(rooms)(wavs, lengths)
    torch.manual_seed(3)  # the same draws, by hand: a room per utterance, then the rooms' noise
    chosen = torch.randint(4, (32,))
    expected = rooms.bank("train").play(wavs, chosen, torch.randn_like(wavs))
    expected[5, 400:] = 0.0
    assert torch.allclose(heard, expected) and bool((heard[5, 400:] == 0).all())
    assert len(set(chosen.tolist())) == 4  # rooms are drawn per utterance, not per batch
    torch.manual_seed(3)
    in_attack_rooms = rooms.bank("attack").play(wavs, chosen % 3, torch.randn_like(wavs))
    assert not torch.allclose(heard, in_attack_rooms)


def test_a_training_in_rooms_is_described_by_the_rooms_settings_not_by_the_folder_caching_them(tmp_path):
    # A benchmark entry records repr(training step): the same training run in two folders is the same training.
    def step(folder, seed=0):
        rooms = SimulatedRooms(str(folder), n_attack=0, n_held_out=0, n_train=2, seed=seed, **SMALL)
        return repr(WaveformNoiseStep(RoomAugmentation(rooms), VanillaAdversarialObjective()))

    here, there = step(tmp_path / "run_a" / "training_rooms"), step(tmp_path / "run_b" / "training_rooms")
    assert here == there and str(tmp_path) not in here
    assert "seed=0" in here and "n_train=2" in here and here != step(tmp_path / "run_a", seed=1)


def test_an_impulse_response_decays_at_its_rooms_rt60(tmp_path):
    """The check against the real thing: pyroomacoustics' own RT60 measurement (Schroeder's backward integration)
    of each saved response, at the rooms' sample rate, gives the RT60 the room was drawn with."""
    from pyroomacoustics.experimental import measure_rt60

    rooms, banks = simulated(tmp_path, n_attack=2, n_held_out=1, rt60=[0.3, 0.3], max_rir_seconds=1.0)
    for rir in banks["attack"].rirs:
        assert measure_rt60(rir.numpy(), fs=rooms.settings["sample_rate"], decay_db=30) == pytest.approx(0.3, rel=0.2)


def test_the_noise_is_at_the_rooms_snr_whatever_the_draws_scale():
    rir = torch.tensor([[1.0, 0.3]])
    bank = RoomBank(["r"], rir, torch.tensor([30.0]), noise_colour=torch.tensor([1.0]), gain_db=torch.tensor([0.0]))
    wavs = torch.randn(1, 256, generator=torch.Generator().manual_seed(0))
    quiet_draws = 1e-3 * torch.randn(1, 256, generator=torch.Generator().manual_seed(1))
    silent = bank.play(wavs, torch.tensor([0]), torch.zeros(1, 256))
    background = bank.play(wavs, torch.tensor([0]), quiet_draws) - silent
    assert float(10 * torch.log10(silent.pow(2).sum() / background.pow(2).sum())) == pytest.approx(30.0, abs=1e-3)


@pytest.mark.parametrize("n, weight", [(2, 1.0), (3, 3.0), (8, 8.0)])
def test_coloured_noise_gives_the_dc_bin_the_lowest_frequencys_weight_and_keeps_its_length(n, weight):
    """Brown noise (colour 2) weighs frequency f by ``1 / f``: a constant input, all DC, comes out scaled by the
    weight of the lowest frequency, ``n`` (its bin's ``f`` is ``1 / n``); with two samples, where the lowest is
    the Nyquist frequency, by 1."""
    out = rooms_module.coloured(torch.ones(1, n), torch.tensor([2.0]))
    assert out.shape == (1, n) and torch.allclose(out, torch.full((1, n), weight))


def test_devices_are_placed_over_the_whole_floor(tmp_path):
    """In a long room both the length and the width are used, each for its own axis."""
    room_sizes = {**SMALL, "length": [8, 9], "width": [6, 7], "rt60": [0.3, 0.4], "max_rir_seconds": 0.01}
    xs, ys = [], []
    for row in SimulatedRooms(str(tmp_path), n_attack=8, n_held_out=0, **room_sizes).prepare():
        for device in (row["source"], row["microphone"]):
            x, y, _ = map(float, device.split())
            xs.append(x)
            ys.append(y)
    assert max(xs) > 6.5 and max(ys) > 2.5


@pytest.mark.parametrize(
    "options, culprit",
    [
        (dict(length=[1.0, 5.0]), "length must leave 0.5 m"),
        (dict(width=[0.9, 5.0]), "width must leave 0.5 m"),
        (dict(rt60=[0.0, 0.5]), "rt60 and distance must be above 0"),
        (dict(distance=[0.0, 1.0]), "rt60 and distance must be above 0"),
        (dict(length=[9, 10], width=[9, 10], height=[3, 4], rt60=[0.05, 0.8]), "cannot be that dry"),
        (dict(length=[3, 4, 5]), "length must be a range"),
        (dict(max_rir_seconds=-1.0), "max_rir_seconds"),
    ],
)
def test_each_bound_is_checked_at_its_low_end(tmp_path, options, culprit):
    with pytest.raises(ValueError, match=culprit):
        SimulatedRooms(str(tmp_path), **{**SMALL, **options})


def test_a_range_of_one_value_and_a_room_just_wide_enough_are_allowed(tmp_path):
    rooms = SimulatedRooms(str(tmp_path), n_attack=1, n_held_out=0, **{**SMALL, "rt60": [0.15, 0.15]})
    assert rooms.settings["rt60"] == [0.15, 0.15]
    narrow = SimulatedRooms(str(tmp_path), n_attack=1, **{**SMALL, "length": [1.2, 4], "rt60": [0.1, 0.2]})
    assert narrow.settings["length"] == [1.2, 4.0]
