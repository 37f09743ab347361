"""The classifier a waveform attack sees: log-Mel, normaliser and model, differentiable end to end."""

import torch


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

    def __init__(self, compute_features, normalizer, model):
        super().__init__()
        self.compute_features = compute_features
        self.normalizer = normalizer
        self.model = model

    def forward(self, wavs):
        return self.model(self.normalizer(self.compute_features(wavs)))
