"""ser_adv_brain: adversarially robust speech emotion recognition on SpeechBrain.

Implements the method of ``PAPER``.
"""

__version__ = "0.1.0"

PAPER = (
    'Z. Ren, A. Baird, J. Han, Z. Zhang and B. Schuller, "Generating and Protecting Against Adversarial '
    'Attacks for Deep Speech-based Emotion Recognition Models", ICASSP 2020'
)
