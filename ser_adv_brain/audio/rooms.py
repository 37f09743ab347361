"""Simulated rooms for over-the-air attacks: room impulse responses (pyroomacoustics), background noise, gain.

A room here is a whole listening condition: a shoebox room with a loudspeaker and a microphone in
it (its impulse response, simulated offline by the image-source method), the level and colour of
its background noise, and the gain of the recording. ``SimulatedRooms`` draws them from a seed, in
disjoint sets: the rooms an over-the-air attack is made in, the held-out rooms it is evaluated in,
and rooms to train in. ``RoomBank.play`` plays a batch of waveforms through rooms, differentiably;
``RoomAugmentation`` records each training utterance in a random training room.
"""

import json
import math
import os

import numpy as np
import soundfile
import torch
import torchaudio.functional

from ser_adv_brain.audio.pcm import length_mask
from ser_adv_brain.checks import check_non_negative, check_non_negative_int, check_positive_int
from ser_adv_brain.tables import read_csv, write_csv

ROOM_SPLITS = ("attack", "held_out", "train")  # in this order: the index seeds each room's draw
SETTINGS_FILE = "rooms.json"
ROOMS_FILE = "rooms.csv"
ROOM_FIELDS = [
    "split",
    "ID",
    "duration",
    "length",
    "width",
    "height",
    "rt60",
    "source",
    "microphone",
    "distance",
    "noise_snr_db",
    "noise_colour",
    "gain_db",
]
WALL_MARGIN = 0.5  # metres between a wall and the loudspeaker or the microphone
DEVICE_HEIGHT = (1.0, 1.8)  # metres: a loudspeaker or a microphone on a desk, a shelf, in a hand


def rir_csv(folder, split):
    """The path of the CSV of one split's impulse responses, in the columns SpeechBrain's ``AddReverb`` reads."""
    return os.path.join(folder, f"{split}_rirs.csv")


def coloured(noise, colour):
    """Gaussian noise whose power falls as ``1 / f^colour`` (0 white, 1 pink, 2 brown), from white draws.

    ``noise``: ``[batch, time]`` standard normal draws; ``colour``: ``[batch]``. (Shaped by hand in the
    frequency domain: neither torchaudio nor SpeechBrain makes coloured noise.)
    """
    n = noise.shape[-1]
    freqs = torch.fft.rfftfreq(n, device=noise.device, dtype=noise.dtype)
    freqs[0] = freqs[1] if n > 2 else 1.0  # the DC bin takes the lowest frequency's weight, not infinity
    weights = freqs.pow(-colour.to(noise).unsqueeze(1) / 2)
    return torch.fft.irfft(torch.fft.rfft(noise) * weights, n=n)


class RoomBank:
    """The rooms of one split as tensors, and playing waveforms through them.

    Arguments
    ---------
    ids : list of str
    rirs : torch.Tensor
        ``[rooms, length]`` impulse responses of unit energy, zero-padded to the longest.
    noise_snr_db, noise_colour, gain_db : torch.Tensor
        ``[rooms]``: each room's background noise level (SNR in dB against the reverberant speech),
        its colour (see ``coloured``) and the recording's gain in dB.
    """

    def __init__(self, ids, rirs, noise_snr_db, noise_colour, gain_db):
        self.ids = list(ids)
        self.rirs = rirs
        self.direct = rirs.abs().argmax(dim=1)  # the direct path: the received audio is aligned on it
        self.noise_snr_db, self.noise_colour, self.gain_db = noise_snr_db, noise_colour, gain_db

    def __len__(self):
        return len(self.ids)

    def play(self, wavs, rooms, noise):
        """``wavs`` (``[batch, time]``) as a microphone records them in ``rooms`` (``[batch]`` indices).

        ``gain * (h * x + n)``: the linear convolution with the room's impulse response, aligned on its
        direct path and cut to the input's length; background noise ``n`` of the room's colour from the
        standard normal draws ``noise`` (``[batch, time]``), at the room's SNR against the reverberant
        speech; the room's gain. Differentiable in ``wavs``.
        """
        device, length = wavs.device, wavs.shape[-1]
        rooms = rooms.to(device)
        # torchaudio's FFT convolution takes one impulse response per row and is linear (SpeechBrain's
        # ``reverberate`` convolves a whole batch with one response, circularly).
        full = torchaudio.functional.fftconvolve(wavs, self.rirs.to(device)[rooms])
        start = self.direct.to(device)[rooms].unsqueeze(1)
        reverberant = full.gather(1, start + torch.arange(length, device=device))
        background = coloured(noise.to(wavs), self.noise_colour.to(device)[rooms])
        # The background's level is the room's: computed without a gradient, so that an attack cannot
        # turn the noise down by changing its own audio's level.
        with torch.no_grad():
            power = reverberant.pow(2).mean(dim=1) / background.pow(2).mean(dim=1).clamp_min(1e-20)
            scale = power.sqrt() * 10 ** (-self.noise_snr_db.to(device)[rooms] / 20)
        gain = 10 ** (self.gain_db.to(device)[rooms] / 20)
        return gain.unsqueeze(1) * (reverberant + scale.unsqueeze(1) * background)


class SimulatedRooms:
    """Shoebox rooms drawn from a seed, split into rooms that make an attack, held-out rooms that evaluate it and
    rooms that train a model (``RoomAugmentation``), from one distribution.

    Each room, drawn uniformly from the ranges below (``split`` and index seed its own draw, so a room
    does not change when the number of rooms does, and the sets never share a draw):

    - its size ``length x width x height`` in metres (3-10 x 3-10 x 2.5-4 by default: from a small
      office or bedroom to a meeting room or a living room, where a call or a health monitor listens);
    - its reverberation time RT60 (0.2-0.8 s: a furnished small room to a bare meeting room), turned
      into wall absorption and an image-source order by Sabine's formula (``pyroomacoustics.inverse_sabine``);
    - a loudspeaker (the attacker's) and a microphone, each at least 0.5 m from every wall at a height
      of 1.0-1.8 m, 0.5-3 m apart (across a desk to across a room);
    - background noise 20-40 dB below the reverberant speech (a quiet home or office: 30-40 dBA of
      background against 60-70 dBA of speech), coloured from white to brown (``noise_colour`` 0-2:
      hiss, ventilation, traffic rumble);
    - a recording gain of -6 to +6 dB (the playback volume and the microphone's gain).

    The impulse response (pyroomacoustics' image-source method, deterministic) is scaled to unit energy,
    so the speech keeps its level on average and the gain alone sets it.

    Generating is a cached, idempotent step: the first use writes ``<folder>/<split>/<ID>.wav`` (32-bit
    float), ``<folder>/<split>_rirs.csv`` (the columns SpeechBrain's ``AddReverb`` reads, paths under
    ``$rir_folder``: ``AddReverb(rir_csv(folder, "train"), replacements={"rir_folder": folder})`` reverberates
    with them, without the rooms' noise and gain), ``<folder>/rooms.csv`` (every room's parameters) and
    ``<folder>/rooms.json`` (these settings); later uses read them, and different settings regenerate them.
    The files are written whole and then renamed, and are the same for the same settings, so processes that
    generate them at once agree. A split of no rooms writes no files.

    Arguments
    ---------
    folder : str
    n_attack, n_held_out, n_train : int
        Rooms in each set (0: none). The sets never share a room, whatever their sizes: a model trained in
        the ``train`` rooms of a seed is never evaluated in a room it heard.
    seed : int
    sample_rate : int
        The audio's sample rate (Hz).
    length, width, height, rt60, distance, noise_snr_db, noise_colour, gain_db : list of two floats
        The ranges above (metres, seconds, dB).
    max_rir_seconds : float
        Impulse responses are cut to this length. (The image-source tail decays more slowly than Sabine's RT60
        says: a room of nominal RT60 0.8 s measured 1.3 s, so its cut part starts some 45 dB down.)

    Example
    -------
    >>> import tempfile
    >>> small = dict(length=[3, 4], width=[3, 4], height=[2.5, 3], rt60=[0.1, 0.2], max_rir_seconds=0.05)
    >>> rooms = SimulatedRooms(tempfile.mkdtemp(), n_attack=2, n_held_out=1, **small)
    >>> bank = rooms.bank("held_out")
    >>> heard = bank.play(0.1 * torch.randn(1, 1600), torch.tensor([0]), torch.randn(1, 1600))
    >>> heard.shape, bank.ids
    (torch.Size([1, 1600]), ['held_out_000'])
    """

    def __init__(
        self,
        folder,
        n_attack=16,
        n_held_out=4,
        n_train=0,
        seed=0,
        sample_rate=16000,
        length=(3.0, 10.0),
        width=(3.0, 10.0),
        height=(2.5, 4.0),
        rt60=(0.2, 0.8),
        distance=(0.5, 3.0),
        noise_snr_db=(20.0, 40.0),
        noise_colour=(0.0, 2.0),
        gain_db=(-6.0, 6.0),
        max_rir_seconds=1.0,
    ):
        check_positive_int(sample_rate=sample_rate)
        counts = {"n_attack": n_attack, "n_held_out": n_held_out, "n_train": n_train}
        check_non_negative_int(**counts)
        if not any(counts.values()):
            raise ValueError(f"SimulatedRooms needs at least one room, got {counts}")
        check_non_negative(max_rir_seconds=max_rir_seconds)
        ranges = dict(
            length=length,
            width=width,
            height=height,
            rt60=rt60,
            distance=distance,
            noise_snr_db=noise_snr_db,
            noise_colour=noise_colour,
            gain_db=gain_db,
        )
        for name, bounds in ranges.items():
            if len(bounds) != 2 or not all(math.isfinite(float(b)) for b in bounds) or bounds[0] > bounds[1]:
                raise ValueError(f"{name} must be a range [low, high] of finite numbers, got {bounds!r}")
        for name in ("length", "width"):
            if ranges[name][0] <= 2 * WALL_MARGIN:
                raise ValueError(
                    f"{name} must leave {WALL_MARGIN} m between each wall and the devices, got {ranges[name]!r}"
                )
        if ranges["rt60"][0] <= 0 or ranges["distance"][0] <= 0:
            raise ValueError(f"rt60 and distance must be above 0, got {ranges['rt60']!r} and {ranges['distance']!r}")
        largest = [ranges[name][1] for name in ("length", "width", "height")]
        import pyroomacoustics  # here and where rooms are made only: importing it takes a second

        try:  # the shortest RT60 in the largest room asks the most absorbing walls
            pyroomacoustics.inverse_sabine(ranges["rt60"][0], largest)
        except ValueError as error:
            raise ValueError(
                f"rt60 {ranges['rt60']!r}: a {largest} m room cannot be that dry ({error}); raise rt60's low end "
                "or shrink the rooms."
            ) from error
        self.folder = folder
        self.settings = {
            **counts,
            "seed": seed,
            "sample_rate": sample_rate,
            **{name: [float(b) for b in bounds] for name, bounds in ranges.items()},
            "max_rir_seconds": float(max_rir_seconds),
        }
        self.seed = seed
        self.banks = {}

    def __repr__(self):
        # The settings, not the folder: they make the rooms, the folder only caches them, and a benchmark entry
        # records this text (its training step), which must not depend on where the run lay on its machine.
        settings = ", ".join(f"{name}={value!r}" for name, value in self.settings.items())
        return f"SimulatedRooms({settings})"

    def size(self, split):
        """The number of rooms in ``split``."""
        return self.settings[f"n_{split}"]

    def bank(self, split):
        """The rooms of ``split`` (one of ``ROOM_SPLITS``) as a ``RoomBank``, generated on first use."""
        if split not in ROOM_SPLITS:
            raise ValueError(f"split must be one of {ROOM_SPLITS}, got {split!r}")
        if not self.size(split):
            raise ValueError(f"{self!r} has no {split} rooms: set n_{split} to 1 or more")
        if split not in self.banks:
            rows = [row for row in self.prepare() if row["split"] == split]  # every value read back as text
            rirs = [torch.from_numpy(soundfile.read(self.rir_path(row), dtype="float32")[0]) for row in rows]
            padded = torch.nn.utils.rnn.pad_sequence(rirs, batch_first=True)
            numbers = {
                f: torch.tensor([float(row[f]) for row in rows]) for f in ("noise_snr_db", "noise_colour", "gain_db")
            }
            self.banks[split] = RoomBank([row["ID"] for row in rows], padded, **numbers)
        return self.banks[split]

    def rir_path(self, row):
        return os.path.join(self.folder, row["split"], f"{row['ID']}.wav")

    def prepare(self):
        """Writes the rooms unless the folder already holds them for these settings; returns ``rooms.csv``'s rows."""
        settings_path = os.path.join(self.folder, SETTINGS_FILE)
        if os.path.isfile(settings_path):
            with open(settings_path, encoding="utf-8") as f:
                if json.load(f) == self.settings:
                    return read_csv(os.path.join(self.folder, ROOMS_FILE))
        rows = []  # generated afresh: the settings changed, or nothing is there yet
        for split in (split for split in ROOM_SPLITS if self.size(split)):
            os.makedirs(os.path.join(self.folder, split), exist_ok=True)
            mine = []
            for index in range(self.size(split)):
                row, rir = self.simulate(split, index)
                rate = self.settings["sample_rate"]
                write_whole(self.rir_path(row), lambda path: soundfile.write(path, rir, rate, "FLOAT", format="WAV"))
                mine.append(row)
            addreverb = [
                {"ID": r["ID"], "duration": r["duration"], "wav": f"$rir_folder/{split}/{r['ID']}.wav"} for r in mine
            ]
            addreverb = [{**r, "wav_format": "wav", "wav_opts": ""} for r in addreverb]
            write_whole(rir_csv(self.folder, split), lambda path: write_csv(path, addreverb))
            rows += mine
        write_whole(os.path.join(self.folder, ROOMS_FILE), lambda path: write_csv(path, rows, ROOM_FIELDS))
        write_whole(settings_path, lambda path: write_json(path, self.settings))
        return read_csv(os.path.join(self.folder, ROOMS_FILE))

    def simulate(self, split, index):
        """Room ``index`` of ``split``: its parameters (a row of ``rooms.csv``) and its impulse response."""
        import pyroomacoustics

        s = self.settings
        rng = np.random.default_rng([s["seed"], ROOM_SPLITS.index(split), index])
        dims = [rng.uniform(*s["length"]), rng.uniform(*s["width"]), rng.uniform(*s["height"])]
        rt60 = rng.uniform(*s["rt60"])
        source, microphone = self.place(rng, dims, split, index)
        absorption, max_order = pyroomacoustics.inverse_sabine(rt60, dims)
        room = pyroomacoustics.ShoeBox(
            dims, fs=s["sample_rate"], materials=pyroomacoustics.Material(absorption), max_order=max_order
        )
        room.add_source(source)
        room.add_microphone(microphone)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)[: max(1, int(s["max_rir_seconds"] * s["sample_rate"]))]
        rir = (rir / np.linalg.norm(rir)).astype(np.float32)
        row = {
            "split": split,
            "ID": f"{split}_{index:03d}",
            "duration": len(rir) / s["sample_rate"],
            "length": dims[0],
            "width": dims[1],
            "height": dims[2],
            "rt60": rt60,
            "source": " ".join(f"{v:.3f}" for v in source),
            "microphone": " ".join(f"{v:.3f}" for v in microphone),
            "distance": float(np.linalg.norm(np.subtract(source, microphone))),
            "noise_snr_db": rng.uniform(*s["noise_snr_db"]),
            "noise_colour": rng.uniform(*s["noise_colour"]),
            "gain_db": rng.uniform(*s["gain_db"]),
        }
        return row, rir

    def place(self, rng, dims, split, index, tries=1000):
        """A loudspeaker and a microphone ``WALL_MARGIN`` from the walls, ``distance`` apart (drawn until they are)."""
        low, high = self.settings["distance"]
        for _ in range(tries):
            source, microphone = (
                [
                    rng.uniform(WALL_MARGIN, dims[0] - WALL_MARGIN),
                    rng.uniform(WALL_MARGIN, dims[1] - WALL_MARGIN),
                    rng.uniform(*DEVICE_HEIGHT),
                ]
                for _ in range(2)
            )
            if low <= np.linalg.norm(np.subtract(source, microphone)) <= high:
                return source, microphone
        raise ValueError(
            f"distance {[low, high]}: no loudspeaker and microphone that far apart in {tries} tries in room "
            f"{index} of {split} ({dims[0]:.1f} x {dims[1]:.1f} m); widen distance or the room's size."
        )


class RoomAugmentation(torch.nn.Module):
    """Each utterance as a microphone records it in one of the ``train`` rooms of ``rooms``, drawn at random.

    ``gain * (h * x + n)`` (``RoomBank.play``): the room's impulse response, its coloured background noise
    at its SNR, its recording gain. It takes SpeechBrain's ``AddNoise`` call signature, so
    ``WaveformNoiseStep`` trains with it as it does with white noise; the padding after each signal
    (``lengths``, relative) stays silent. The model then hears in training what the over-the-air threat
    plays it (``OverTheAirPGD``), in rooms of the same distribution that the attack's and the held-out
    rooms never share. (SpeechBrain's ``AddReverb`` convolves a whole batch with one response, circularly,
    and adds no room noise or gain: the threat's recording would not be the one trained on.)

    The room and the noise are drawn from torch's global generator, like dropout: part of training's random
    stream, which the checkpoints save.

    Arguments
    ---------
    rooms : SimulatedRooms
        With ``n_train`` rooms (generated into its folder on first use).

    Example
    -------
    >>> import tempfile
    >>> small = dict(length=[3, 4], width=[3, 4], height=[2.5, 3], rt60=[0.1, 0.2], max_rir_seconds=0.05)
    >>> rooms = SimulatedRooms(tempfile.mkdtemp(), n_attack=0, n_held_out=0, n_train=2, **small)
    >>> _ = torch.manual_seed(0)
    >>> heard = RoomAugmentation(rooms)(0.1 * torch.randn(3, 1600), torch.tensor([1.0, 1.0, 0.5]))
    >>> heard.shape, bool((heard[2, 800:] == 0).all())
    (torch.Size([3, 1600]), True)
    """

    def __init__(self, rooms):
        super().__init__()
        if not isinstance(rooms, SimulatedRooms):
            raise TypeError(f"rooms must be a SimulatedRooms (ser_adv_brain.audio.rooms), got {rooms!r}")
        if not rooms.size("train"):
            raise ValueError(f"RoomAugmentation needs training rooms: {rooms!r} has n_train 0")
        self.rooms = rooms

    def extra_repr(self):
        return f"rooms={self.rooms!r}"

    def forward(self, wavs, lengths=None):
        bank = self.rooms.bank("train")
        chosen = torch.randint(len(bank), (len(wavs),), device=wavs.device)
        heard = bank.play(wavs, chosen, torch.randn_like(wavs))
        mask = length_mask(wavs, lengths)
        return heard if mask is None else heard * mask


def write_whole(path, write):
    """``write(tmp)`` then renames ``tmp`` to ``path``: a reader never sees half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    write(tmp)
    os.replace(tmp, path)


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
