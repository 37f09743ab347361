"""Evaluation under attack: the attack suite and robust UAR, masking checks, transfer, targeted success, detection."""
