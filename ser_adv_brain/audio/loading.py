"""Audio loading: any file soundfile reads, any rate and channel count, to mono at the model's rate."""

import torch
import torchaudio.functional
from speechbrain.dataio import audio_io


def to_mono(wav):
    """Averages the channels of a ``[time, channels]`` signal; a 1-D signal is returned as is."""
    return wav.mean(dim=-1) if wav.dim() == 2 else wav


def resample(wav, orig_rate, new_rate):
    """Resamples a 1-D signal (differentiable, band-limited sinc interpolation)."""
    if orig_rate == new_rate:
        return wav
    return torchaudio.functional.resample(wav, int(orig_rate), int(new_rate))


def load_audio(path, sample_rate=16000):
    """Reads an audio file as a mono float signal at ``sample_rate``.

    Arguments
    ---------
    path : str
        Any file soundfile can read (wav, flac, ogg, ...).
    sample_rate : int
        The rate the model works at; the file is resampled to it.

    Returns
    -------
    torch.Tensor
        Shape ``[time]``.
    """
    wav, file_rate = audio_io.load(path, channels_first=False, dtype=torch.float32)
    return resample(to_mono(wav), file_rate, sample_rate)


def frames_to_samples(n_frames, hop_length):
    """Samples a centred STFT needs to produce exactly ``n_frames`` frames."""
    return (n_frames - 1) * hop_length


def fix_length(wav, num_samples, random_crop=False, generator=None):
    """Brings a 1-D signal to ``num_samples`` as the paper's code does.

    Short clips are padded by repeating (tiling) the clip, so the padding is
    speech rather than silence. Long clips are cropped: at a random offset
    for training (augmentation), centred for evaluation (deterministic).
    """
    length = wav.shape[-1]
    if length == 0:
        raise ValueError("Cannot bring an empty signal to a fixed length.")
    if length < num_samples:
        repeats = -(-num_samples // length)
        return wav.repeat(repeats)[:num_samples]
    excess = length - num_samples
    if random_crop:
        start = int(torch.randint(excess + 1, (1,), generator=generator))
    else:
        start = excess // 2
    return wav[start : start + num_samples]
