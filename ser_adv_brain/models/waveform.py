"""What a model takes (features or the waveform), and the classifier a waveform attack sees: log-Mel,
normaliser and model, differentiable end to end."""

import torch


def takes_waveform(model):
    """Whether ``model`` takes the waveform itself, as its ``input_domain`` declares (``"waveform"``).

    A model that declares nothing takes the normalised log-Mel features, as every model did before the
    declaration (``PooledClassifier`` declares ``"features"``).

    Example
    -------
    >>> from ser_adv_brain.models import CNN4
    >>> takes_waveform(CNN4(base_channels=2)), takes_waveform(torch.nn.Linear(2, 2))
    (False, False)
    """
    return getattr(model, "input_domain", "features") == "waveform"


class WaveformClassifier(torch.nn.Module):
    """Waveforms ``[batch, time]`` -> ``(logits, embedding)``: log-Mel, normaliser, model, all differentiable.

    The classifier a waveform attack sees; the modules are shared, not copied.

    Arguments
    ---------
    compute_features : LogMel
    normalizer : FeatureNormalizer
    model : torch.nn.Module
        Features -> ``(logits, embedding)``.
    """

    input_domain = "waveform"

    def __init__(self, compute_features, normalizer, model):
        super().__init__()
        self.compute_features = compute_features
        self.normalizer = normalizer
        self.model = model

    def forward(self, wavs):
        return self.model(self.normalizer(self.compute_features(wavs)))
