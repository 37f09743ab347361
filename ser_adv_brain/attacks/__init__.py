"""Adversarial attacks, chosen in yaml with ``!new:``."""

from ser_adv_brain.attacks.base import GradientAttack
from ser_adv_brain.attacks.fgsm import FGSM

__all__ = ["GradientAttack", "FGSM"]
