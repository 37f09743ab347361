"""Audio: reading any file to mono at the model's rate, fixed lengths, 16-bit PCM, Gaussian noise on the samples,
and simulated rooms."""

from ser_adv_brain.audio.noise import GaussianWaveformNoise

__all__ = ["GaussianWaveformNoise"]
