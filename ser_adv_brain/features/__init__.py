"""The model's input features, chosen in yaml with ``!new:``: the paper's log-Mel, its z-scoring, feature noise."""

from ser_adv_brain.features.log_mel import LogMel
from ser_adv_brain.features.noise import GaussianFeatureNoise
from ser_adv_brain.features.normalizer import FeatureNormalizer

__all__ = ["FeatureNormalizer", "GaussianFeatureNoise", "LogMel"]
