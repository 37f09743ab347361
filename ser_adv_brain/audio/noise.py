"""Gaussian noise of a fixed standard deviation on the samples: randomised smoothing's noise in the waveform."""

import torch

from ser_adv_brain.audio.pcm import length_mask
from ser_adv_brain.checks import check_non_negative


class GaussianWaveformNoise(torch.nn.Module):
    """``x~ = x + sigma * n``, ``n ~ N(0, 1)`` independently for every real sample of each signal.

    ``sigma`` is in full-scale units (1.0 = the largest 16-bit sample), the
    units of the samples the model reads (``ser_adv_brain.audio.loading``: no
    gain, no peak normalisation). Written here because SpeechBrain's ``AddNoise``
    sets its level from an SNR drawn per utterance and rescales the clean
    signal, while randomised smoothing (Cohen et al., ICML 2019) needs the same
    ``N(0, sigma^2 I)`` on every input, whatever its level. The noisy signal
    is neither clipped nor rounded to 16-bit PCM: the base classifier is
    trained on the noise its certificate assumes. It takes ``AddNoise``'s call
    signature, so ``WaveformNoiseStep`` runs it; the padding after each signal
    (``lengths``, relative) stays silent.

    The noise is drawn from torch's global generator, like dropout: it is
    part of training's random stream, which the checkpoints save.

    Arguments
    ---------
    sigma : float
        Standard deviation of the noise on each sample, in full-scale units.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> noisy = GaussianWaveformNoise(sigma=0.05)(torch.zeros(4, 16000), torch.ones(4))
    >>> round(float(noisy.std()), 3)
    0.05
    """

    def __init__(self, sigma):
        super().__init__()
        check_non_negative(sigma=sigma)
        self.sigma = float(sigma)

    def extra_repr(self):
        return f"sigma={self.sigma}"

    def forward(self, wavs, lengths=None):
        noise = self.sigma * torch.randn_like(wavs)
        mask = length_mask(wavs, lengths)
        return wavs + (noise if mask is None else noise * mask)
