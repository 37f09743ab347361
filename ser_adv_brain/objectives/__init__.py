"""Training objectives of the defences, chosen in yaml with ``!new:``."""

from ser_adv_brain.objectives.base import AdversarialObjective, classification_loss
from ser_adv_brain.objectives.similarity import SimilarityAdversarialObjective
from ser_adv_brain.objectives.trades import TRADESObjective
from ser_adv_brain.objectives.vanilla import VanillaAdversarialObjective

__all__ = [
    "AdversarialObjective",
    "classification_loss",
    "VanillaAdversarialObjective",
    "SimilarityAdversarialObjective",
    "TRADESObjective",
]
