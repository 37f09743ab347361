"""Gaussian noise on the normalised log-Mel: the paper's log-Mel noise-augmentation baseline (Ren et al., 2020)."""

import torch

from ser_adv_brain.checks import check_non_negative


class GaussianFeatureNoise(torch.nn.Module):
    """``x~ = x + n``, ``n ~ N(0, std^2)`` independently for every frame and Mel bin of ``x``.

    ``x`` is the z-scored log-Mel input of the model. Matched to an FGSM budget
    eps, ``std = eps`` gives the noise the root mean square of the FGSM
    perturbation, which moves every feature by exactly eps: the same energy,
    in a random direction instead of the loss's. (SpeechBrain's ``AddNoise``
    sets its level relative to each signal's own power, an SNR; on z-scored
    features the budget is an absolute size, hence this class.)

    The noise is drawn from torch's global generator, like dropout: it is
    part of training's random stream, which the checkpoints save.

    Arguments
    ---------
    std : float
        Standard deviation of the noise, in units of the normalised features.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> x = torch.zeros(8, 188, 64)
    >>> round(float(GaussianFeatureNoise(std=0.02)(x).std()), 3)
    0.02
    """

    def __init__(self, std):
        super().__init__()
        check_non_negative(std=std)
        self.std = float(std)

    def extra_repr(self):
        return f"std={self.std}"

    def forward(self, feats):
        return feats + self.std * torch.randn_like(feats)
