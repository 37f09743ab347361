"""16-bit PCM: the values a wav file holds, padding masks, and the SNR of a perturbation."""

import torch

PCM16_SCALE = 32768.0  # soundfile reads 16-bit PCM as int / 32768


def quantize_pcm16(wavs):
    """The nearest values a 16-bit PCM file holds (``k / 32768``, ``k`` in [-32768, 32767])."""
    return (wavs * PCM16_SCALE).round().clamp(-PCM16_SCALE, PCM16_SCALE - 1) / PCM16_SCALE


def length_mask(wavs, wav_lens=None):
    """``[batch, time]``: 1 on each signal's real samples, 0 on the padding (``wav_lens`` relative, as SpeechBrain's).

    None when nothing is padded (the attack then skips the masking).
    """
    if wav_lens is None:
        return None
    lengths = torch.round(wav_lens.to(wavs.device).float() * wavs.shape[1])
    if bool((lengths >= wavs.shape[1]).all()):
        return None
    return (torch.arange(wavs.shape[1], device=wavs.device) < lengths.unsqueeze(1)).to(wavs.dtype)


def snr_db(clean, adversarial, wav_lens=None):
    """Per-utterance ``10 log10(|x|^2 / |x' - x|^2)`` over the real samples; inf where nothing changed."""
    mask = length_mask(clean, wav_lens)
    mask = 1.0 if mask is None else mask.double()
    signal = (clean.double() * mask).pow(2).sum(dim=1)
    noise = ((adversarial.double() - clean.double()) * mask).pow(2).sum(dim=1)
    return 10 * torch.log10(signal / noise)
