"""Audio: reading any file to mono at the model's rate, fixed lengths, 16-bit PCM, and Gaussian noise on the samples."""

from ser_adv_brain.audio.noise import GaussianWaveformNoise

__all__ = ["GaussianWaveformNoise"]
