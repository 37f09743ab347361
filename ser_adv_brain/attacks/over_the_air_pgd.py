"""PGD on the audio samples that survives a room: expectation over simulated rooms (Athalye et al., ICML 2018)."""

import torch

from ser_adv_brain.attacks.base import random_rows
from ser_adv_brain.attacks.waveform_pgd import WaveformPGD
from ser_adv_brain.audio.rooms import SimulatedRooms
from ser_adv_brain.checks import check_positive_int


class OverTheAirPGD(WaveformPGD):
    """Waveform PGD on ``E_t[L(f(t(x + d)), y)]``, ``t`` a room the audio is played in (EOT).

    Athalye et al., "Synthesizing Robust Adversarial Examples" (ICML 2018): maximise the expected loss
    over random transformations ``t`` of the input, estimated with a few samples per step. Here ``t``
    is a room of ``rooms``' attack set (``audio.rooms.RoomBank.play``): convolution with its impulse
    response, background noise at its SNR and colour, its gain. Each step's gradient is

        g = (1 / S) sum_{s=1..S} grad_d L(f(t_s(x + d)), y)

    over ``S = samples`` rooms drawn per utterance (with their own noise draws), then PGD's step and
    projection under ``WaveformBudget``'s SNR budget, and its 16-bit rounding. The suite evaluates the
    audio in ``rooms``' held-out set, which the attack never sees (threat model ``waveform_room_snr``).

    Random draws (the start, each step's rooms and noise) come from the attack's own generator, or,
    given ``keys``, from one seeded by ``seed`` and each utterance's key (``attacks.base.random_rows``).
    One restart only: PGD picks among restarts by the loss without a room, which says nothing of the
    held-out rooms; more ``samples`` and ``steps`` are the levers.

    Arguments
    ---------
    eps : float
        The SNR budget in dB.
    rooms : SimulatedRooms
    samples : int
        Rooms per utterance and step (>= 1).
    steps, rel_step_size, random_start, seed, label_source, model_mode, target_class, class_names :
        See ``WaveformPGD``.

    Example
    -------
    >>> import tempfile
    >>> from ser_adv_brain.features import FeatureNormalizer, LogMel
    >>> from ser_adv_brain.models import CNN4, WaveformClassifier
    >>> small = dict(length=[3, 4], width=[3, 4], height=[2.5, 3], rt60=[0.1, 0.2], max_rir_seconds=0.05)
    >>> rooms = SimulatedRooms(tempfile.mkdtemp(), n_attack=2, n_held_out=1, **small)
    >>> classifier = WaveformClassifier(LogMel(n_mels=20), FeatureNormalizer(20), CNN4(base_channels=2))
    >>> out = OverTheAirPGD(eps=30.0, rooms=rooms, steps=2, samples=2).run(classifier, 0.1 * torch.randn(2, 4000), None)
    >>> bool((out.snr_db >= 30.0).all())
    True
    """

    def __init__(
        self,
        eps,
        rooms,
        samples=4,
        steps=10,
        rel_step_size=None,
        random_start=True,
        seed=0,
        label_source="predicted",
        model_mode="eval",
        target_class=None,
        class_names=None,
    ):
        super().__init__(
            eps,
            steps=steps,
            rel_step_size=rel_step_size,
            norm="snr",
            random_start=random_start,
            seed=seed,
            label_source=label_source,
            model_mode=model_mode,
            target_class=target_class,
            class_names=class_names,
        )
        if not isinstance(rooms, SimulatedRooms):
            raise TypeError(f"rooms must be a SimulatedRooms (ser_adv_brain.audio.rooms), got {rooms!r}")
        check_positive_int(samples=samples)
        for split in ("attack", "held_out"):  # made in the one, scored in the other
            if not rooms.size(split):
                raise ValueError(f"OverTheAirPGD needs {split} rooms: {rooms!r} has n_{split} 0")
        self.rooms, self.samples = rooms, samples
        self.generator = torch.Generator().manual_seed(seed)  # the rooms are drawn even without a random start
        self.keys, self.step_index = None, 0

    @staticmethod
    def norms():
        return ("snr",)

    @property
    def threat_model(self):
        """``waveform_room_snr``: the waveform SNR budget, the audio heard through held-out rooms."""
        return "waveform_room_snr"

    @property
    def uses_given_gradient(self):
        """A caller's gradient is taken without a room: not the expectation's."""
        return False

    def start_is_clean(self, first_gradient):
        """The labels come from the clean audio heard directly, never from a gradient pass through a room."""
        return False

    def __repr__(self):
        return f"{super().__repr__()[:-1]}, samples={self.samples}, rooms={self.rooms!r})"

    def attack(self, model, inputs, targets, radius, loss_scale=1.0, gradient=None, mask=None, keys=None):
        """``WaveformPGD.attack`` with the EOT gradient; ``keys`` and the step count seed each step's rooms."""
        # PGD's loop asks ``gradient_in_mode`` for one gradient a step; it draws that step's rooms from these.
        self.keys, self.step_index = keys, 0
        try:
            return super().attack(model, inputs, targets, radius, loss_scale, None, mask, keys)
        finally:
            self.keys = None

    def draw_rooms(self, batch, length):
        """This step's ``samples`` rooms per utterance (``[batch, samples]`` indices) and their noise draws
        (``[batch, samples, length]``), per utterance from its key if the attack was given keys."""
        self.step_index += 1
        unit, noise = random_rows(
            [(batch, self.samples), (batch, self.samples, length)],
            self.generator,
            keys=self.keys,
            seed=self.seed,
            stream=f"rooms/{self.step_index}",
            draw=[torch.rand, torch.randn],
        )
        n_rooms = self.rooms.size("attack")
        return (unit * n_rooms).long().clamp(max=n_rooms - 1), noise

    def eot_gradient(self, model, inputs, labels, rooms, noise, loss_scale=1.0):
        """``(1 / S) sum_s grad_x L(f(t_s(x)), y)`` for each utterance, ``t_s`` its ``s``-th room
        (``rooms``: ``[batch, S]`` indices into the attack rooms; ``noise``: ``[batch, S, time]``)."""
        inputs = inputs.detach().requires_grad_(True)
        samples = rooms.shape[1]
        # Row b * S + s: utterance b in its room s.
        heard = self.rooms.bank("attack").play(
            inputs.repeat_interleave(samples, dim=0), rooms.flatten(), noise.flatten(0, 1)
        )
        logits, _ = model(heard)
        loss = self.loss(logits, labels.repeat_interleave(samples)).sum() * (loss_scale / samples)
        (grad,) = torch.autograd.grad(loss, inputs)
        return grad

    def gradient_in_mode(self, model, inputs, targets, labels=None, loss_scale=1.0):
        """The EOT gradient at ``inputs`` over this step's rooms (the model already in the attack's mode)."""
        rooms, noise = self.draw_rooms(len(inputs), inputs.shape[-1])
        return self.eot_gradient(model, inputs, labels, rooms, noise, loss_scale), labels
