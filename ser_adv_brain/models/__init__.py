"""The three models of the paper (each returns ``(logits, embedding)``), the waveform classifier around one,
and the self-supervised classifier, which takes the waveform itself."""

from ser_adv_brain.models.cnn4 import CNN4
from ser_adv_brain.models.resnet50 import ResNet50
from ser_adv_brain.models.self_supervised import SelfSupervisedClassifier
from ser_adv_brain.models.vgg16 import VGG16
from ser_adv_brain.models.waveform import WaveformClassifier, takes_waveform

__all__ = ["CNN4", "VGG16", "ResNet50", "WaveformClassifier", "SelfSupervisedClassifier", "takes_waveform"]
