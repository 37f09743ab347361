"""Auto-PGD on the audio samples, under a per-utterance SNR or amplitude budget, scored as 16-bit PCM."""

from ser_adv_brain.attacks.apgd import APGD
from ser_adv_brain.attacks.waveform_budget import WaveformBudget


class WaveformAPGD(WaveformBudget, APGD):
    """``APGD`` (Croce and Hein, ICML 2020) in the waveform threat model of ``WaveformBudget``.

    With ``norm="snr"`` the ball is each utterance's L2 ball of radius
    ``|x|_2 / 10^(eps / 20)``, so APGD's step size starts at twice that radius;
    the perturbation is rounded onto the 16-bit PCM grid at the end. An
    iterate that fools the model counts (it is kept, and with
    ``stop_when_fooled`` the utterance stops) only if its rounded audio fools
    it too, which costs one forward pass of those utterances: the suite
    scores the rounded audio.

    Arguments
    ---------
    eps : float
        The budget in the norm's unit (dB for ``"snr"``).
    norm : str
        ``"snr"`` or ``"linf"``.
    steps, loss, targets, eot_iter, random_start, restarts, seed, stop_when_fooled, label_source, model_mode,
    class_names :
        See ``APGD``.

    Example
    -------
    >>> import torch
    >>> from ser_adv_brain.features import FeatureNormalizer, LogMel
    >>> from ser_adv_brain.models import CNN4, WaveformClassifier
    >>> classifier = WaveformClassifier(LogMel(n_mels=20), FeatureNormalizer(20), CNN4(base_channels=2))
    >>> out = WaveformAPGD(eps=30.0, steps=3, loss="dlr").run(classifier, 0.1 * torch.randn(2, 4000), targets=None)
    >>> bool((out.snr_db >= 30.0).all())
    True
    """

    def __init__(
        self,
        eps,
        steps=100,
        loss="ce",
        targets=0,
        eot_iter=1,
        norm="snr",
        random_start=True,
        restarts=1,
        seed=0,
        stop_when_fooled=False,
        label_source="predicted",
        model_mode="eval",
        class_names=None,
    ):
        # No eta: the features' clip has no meaning on the samples.
        super().__init__(
            eps=eps,
            steps=steps,
            loss=loss,
            targets=targets,
            eot_iter=eot_iter,
            norm=norm,
            random_start=random_start,
            restarts=restarts,
            seed=seed,
            stop_when_fooled=stop_when_fooled,
            eta=None,
            label_source=label_source,
            model_mode=model_mode,
            class_names=class_names,
        )
