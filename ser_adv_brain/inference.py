"""The interface's import path in exported folders (``custom_interface.py``, ``foreign_class``): it lives in
``ser_adv_brain.interface``."""

from ser_adv_brain.interface import EmotionRecognizer, UnusableAudioError, export_interface

__all__ = ["EmotionRecognizer", "UnusableAudioError", "export_interface"]
