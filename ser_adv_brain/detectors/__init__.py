"""Fake-data detectors, chosen in yaml with ``!new:`` (trained by ``python -m ser_adv_brain.train_detector``)."""

from ser_adv_brain.detectors.embedding_mlp import EmbeddingDetector

__all__ = ["EmbeddingDetector"]
