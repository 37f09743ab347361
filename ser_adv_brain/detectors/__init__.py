"""Fake-data detectors, chosen in yaml with ``!new:`` (``ser-adv detector`` trains them), and the guarded classifier."""

from ser_adv_brain.detectors.embedding_mlp import EmbeddingDetector
from ser_adv_brain.detectors.guarded import DetectedClassifier

__all__ = ["DetectedClassifier", "EmbeddingDetector"]
