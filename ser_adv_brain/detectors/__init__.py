"""Fake-data detectors, chosen in yaml with ``!new:`` (trained by ``ser-adv detector``), and the classifier they guard."""

from ser_adv_brain.detectors.embedding_mlp import EmbeddingDetector
from ser_adv_brain.detectors.guarded import DetectedClassifier

__all__ = ["DetectedClassifier", "EmbeddingDetector"]
