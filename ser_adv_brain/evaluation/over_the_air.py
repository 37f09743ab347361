"""Audio heard over the air: each utterance recorded in the held-out rooms of an over-the-air attack, and the
prediction in the worst of them, as the suite scores the threat model ``waveform_room_snr``.

The held-out rooms are a fixed set (``SimulatedRooms``' ``held_out`` split, never the rooms the attack was
made in). Their background noise is drawn per utterance from the rooms' seed and the utterance's key, so
the clean and the adversarial audio of an utterance meet the same noise in each room, whatever the batch.
"""

import torch

from ser_adv_brain.attacks.base import random_rows
from ser_adv_brain.audio.pcm import quantize_pcm16


def recorded_in_held_out_rooms(rooms, wavs, keys):
    """``[rooms, batch, time]``: ``wavs`` played in each held-out room of ``rooms``, recorded as 16-bit PCM.

    ``keys`` (one per utterance) seed each utterance's noise; None: one generator for the batch.
    """
    bank = rooms.bank("held_out")
    generator, recorded = torch.Generator().manual_seed(rooms.seed), []
    for index in range(len(bank)):
        stream = f"held-out/{index}"
        noise = random_rows(wavs.shape, generator, keys=keys, seed=rooms.seed, stream=stream, draw=torch.randn)
        in_room = torch.full((len(wavs),), index, dtype=torch.long)
        recorded.append(quantize_pcm16(bank.play(wavs, in_room, noise)))
    return torch.stack(recorded)


@torch.no_grad()
def predicted_in_held_out_rooms(rooms, model, wavs, targets, keys):
    """Per utterance, the model's prediction in the worst held-out room: the first that fools it, else the first.

    The worst case over the rooms: an utterance counts as correct only if the model is right in every one.
    """
    recorded = recorded_in_held_out_rooms(rooms, wavs, keys)
    predictions = torch.stack([model(heard)[0].argmax(dim=-1) for heard in recorded])
    worst = (predictions != targets).int().argmax(dim=0)  # the first room that fools it; 0 where none does
    return predictions.gather(0, worst.unsqueeze(0)).squeeze(0)
