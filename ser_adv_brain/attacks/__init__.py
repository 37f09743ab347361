"""Adversarial attacks, chosen in yaml with ``!new:``."""

from ser_adv_brain.attacks.apgd import APGD
from ser_adv_brain.attacks.base import Attack, GradientAttack
from ser_adv_brain.attacks.detector_aware_pgd import DetectorAwarePGD
from ser_adv_brain.attacks.fgsm import FGSM
from ser_adv_brain.attacks.kl_pgd import KLPGD
from ser_adv_brain.attacks.over_the_air_pgd import OverTheAirPGD
from ser_adv_brain.attacks.pgd import PGD
from ser_adv_brain.attacks.square import SquareAttack, SquareResult
from ser_adv_brain.attacks.transfer_attack import TransferAttack
from ser_adv_brain.attacks.universal_perturbation import LearntPerturbation, UniversalPerturbation
from ser_adv_brain.attacks.waveform_apgd import WaveformAPGD
from ser_adv_brain.attacks.waveform_budget import AdversarialAudio
from ser_adv_brain.attacks.waveform_kl_pgd import WaveformKLPGD
from ser_adv_brain.attacks.waveform_pgd import WaveformPGD

__all__ = [
    "APGD",
    "AdversarialAudio",
    "Attack",
    "DetectorAwarePGD",
    "FGSM",
    "GradientAttack",
    "KLPGD",
    "LearntPerturbation",
    "OverTheAirPGD",
    "PGD",
    "SquareAttack",
    "SquareResult",
    "TransferAttack",
    "UniversalPerturbation",
    "WaveformAPGD",
    "WaveformKLPGD",
    "WaveformPGD",
]
