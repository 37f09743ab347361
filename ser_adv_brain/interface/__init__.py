"""The pretrained interface: ``EmotionRecognizer`` and the export of a trained checkpoint to its folder."""

from ser_adv_brain.interface.export import export_interface
from ser_adv_brain.interface.recognizer import EmotionRecognizer, UnusableAudioError

__all__ = ["EmotionRecognizer", "UnusableAudioError", "export_interface"]
