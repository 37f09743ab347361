"""Adversarial attacks, chosen in yaml with ``!new:``."""

from ser_adv_brain.attacks.apgd import APGD
from ser_adv_brain.attacks.base import Attack, GradientAttack
from ser_adv_brain.attacks.detector_aware_pgd import DetectedClassifier, DetectorAwarePGD
from ser_adv_brain.attacks.fgsm import FGSM
from ser_adv_brain.attacks.kl_pgd import KLPGD
from ser_adv_brain.attacks.pgd import PGD
from ser_adv_brain.attacks.square import SquareAttack, SquareResult
from ser_adv_brain.attacks.success_matrix import targeted_success_matrix
from ser_adv_brain.attacks.transfer_attack import TransferAttack
from ser_adv_brain.attacks.waveform_apgd import WaveformAPGD
from ser_adv_brain.attacks.waveform_pgd import AdversarialAudio, WaveformClassifier, WaveformPGD, quantize_pcm16, snr_db

__all__ = [
    "APGD",
    "Attack",
    "GradientAttack",
    "FGSM",
    "PGD",
    "KLPGD",
    "DetectorAwarePGD",
    "DetectedClassifier",
    "targeted_success_matrix",
    "SquareAttack",
    "SquareResult",
    "TransferAttack",
    "WaveformPGD",
    "WaveformAPGD",
    "WaveformClassifier",
    "AdversarialAudio",
    "quantize_pcm16",
    "snr_db",
]
