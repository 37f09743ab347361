"""The feature-noise plug-in's path in yaml files (``!new:ser_adv_brain.feature_noise.GaussianFeatureNoise``): it
lives in ``ser_adv_brain.features``."""

from ser_adv_brain.features import GaussianFeatureNoise

__all__ = ["GaussianFeatureNoise"]
