"""A classifier guarded by a fake-data detector: what the adaptive attack and the interface run."""

import torch


class DetectedClassifier(torch.nn.Module):
    """Features ``[batch, frames, n_mels]`` -> ``(logits, detector logit)``: the classifier and its detector.

    What ``DetectorAwarePGD`` attacks; the interface also classifies through
    it. The modules are shared, not copied.

    Arguments
    ---------
    model : torch.nn.Module
        Features -> ``(logits, embedding)``.
    detector : torch.nn.Module
        Embedding -> the logit of "fake" (``ser_adv_brain.detectors``).
    """

    def __init__(self, model, detector):
        super().__init__()
        self.model = model
        self.detector = detector

    def forward(self, feats):
        logits, embedding = self.model(feats)
        return logits, self.detector(embedding)
