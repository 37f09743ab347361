"""ser_adv_brain: adversarially robust speech emotion recognition on SpeechBrain.

Implements Ren et al., "Generating and Protecting Against Adversarial Attacks
for Deep Speech-based Emotion Recognition Models", ICASSP 2020.
"""

__version__ = "0.1.0"
