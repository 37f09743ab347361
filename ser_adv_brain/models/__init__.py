"""The three models of the paper (each returns ``(logits, embedding)``), and the waveform classifier around one."""

from ser_adv_brain.models.cnn4 import CNN4
from ser_adv_brain.models.resnet50 import ResNet50
from ser_adv_brain.models.vgg16 import VGG16
from ser_adv_brain.models.waveform import WaveformClassifier

__all__ = ["CNN4", "VGG16", "ResNet50", "WaveformClassifier"]
