"""PGD on the audio samples, under an amplitude or a per-utterance SNR budget, scored as 16-bit PCM."""

from ser_adv_brain.attacks.pgd import PGD
from ser_adv_brain.attacks.waveform_budget import WaveformBudget


class WaveformPGD(WaveformBudget, PGD):
    """PGD whose perturbation lives on the samples (Madry et al., 2018, in the waveform domain).

    The budget, its units and the 16-bit rounding are ``WaveformBudget``'s.

    Arguments
    ---------
    eps : float
        The budget in the norm's unit (dB for ``"snr"``).
    norm : str
        ``"snr"`` or ``"linf"``.
    steps, rel_step_size, random_start, restarts, seed, label_source, model_mode, target_class, class_names :
        See ``PGD``. (No ``stop_when_fooled``: an iterate that fools the model may not once its
        perturbation is rounded to 16-bit PCM, so every step is taken.)

    Example
    -------
    >>> import torch
    >>> from ser_adv_brain.features import FeatureNormalizer, LogMel
    >>> from ser_adv_brain.models import CNN4, WaveformClassifier
    >>> classifier = WaveformClassifier(LogMel(n_mels=20), FeatureNormalizer(20), CNN4(base_channels=2))
    >>> wavs = 0.1 * torch.randn(2, 4000)
    >>> out = WaveformPGD(eps=30.0, steps=2).run(classifier, wavs, targets=None)
    >>> bool((out.snr_db >= 30.0).all())
    True
    """

    def __init__(
        self,
        eps,
        steps=10,
        rel_step_size=None,
        norm="snr",
        random_start=True,
        restarts=1,
        seed=0,
        label_source="predicted",
        model_mode="eval",
        target_class=None,
        class_names=None,
    ):
        # No eta: the features' clip has no meaning on the samples.
        super().__init__(
            eps=eps,
            steps=steps,
            rel_step_size=rel_step_size,
            norm=norm,
            random_start=random_start,
            restarts=restarts,
            seed=seed,
            stop_when_fooled=False,
            eta=None,
            label_source=label_source,
            model_mode=model_mode,
            target_class=target_class,
            class_names=class_names,
        )
