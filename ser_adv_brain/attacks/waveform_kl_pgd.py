"""TRADES's attack on the audio samples: KL-PGD under a per-utterance SNR or amplitude budget, as 16-bit PCM."""

from ser_adv_brain.attacks.kl_pgd import KLPGD
from ser_adv_brain.attacks.waveform_budget import WaveformBudget


class WaveformKLPGD(WaveformBudget, KLPGD):
    """``KLPGD`` (TRADES's inner maximisation, Zhang et al., ICML 2019) in the waveform threat model.

    ``x' = argmax KL(p(x) || p(x'))`` over the samples, within the budget of
    ``WaveformBudget`` (with ``norm="snr"``, each utterance's L2 ball of radius
    ``|x|_2 / 10^(eps / 20)``), by PGD from a random start; the gradient flows
    through the log-Mel and the normaliser (``WaveformClassifier``), and the
    perturbation is rounded onto the 16-bit PCM grid at the end. It makes the
    fake twin of waveform-domain TRADES training.

    Arguments
    ---------
    eps : float
        The budget in the norm's unit (dB for ``"snr"``).
    norm : str
        ``"snr"`` or ``"linf"``.
    steps, rel_step_size, restarts, seed, model_mode :
        See ``KLPGD``.

    Example
    -------
    >>> import torch
    >>> from ser_adv_brain.features import FeatureNormalizer, LogMel
    >>> from ser_adv_brain.models import CNN4, WaveformClassifier
    >>> classifier = WaveformClassifier(LogMel(n_mels=20), FeatureNormalizer(20), CNN4(base_channels=2)).eval()
    >>> out = WaveformKLPGD(eps=40.0, steps=2).run(classifier, 0.1 * torch.randn(2, 4000), targets=None)
    >>> bool((out.snr_db >= 40.0).all())
    True
    """

    def __init__(self, eps, steps=10, rel_step_size=None, norm="snr", restarts=1, seed=0, model_mode="eval"):
        # No eta: the features' clip has no meaning on the samples.
        super().__init__(
            eps,
            steps=steps,
            rel_step_size=rel_step_size,
            norm=norm,
            restarts=restarts,
            seed=seed,
            eta=None,
            model_mode=model_mode,
        )
