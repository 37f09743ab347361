"""A training run's life around its Brain: checked datasets, the end-of-run reports and export, reloading.

A ``recipes/<corpus>/train.py`` checks and loads its data with ``checked_datasets``,
trains and tests its Brain, then calls ``report_attacks`` (and, for a smoothing run, ``report_certificates``)
and ``export_checkpoint``; the commands reload a finished run with ``load_trained``.
"""

from ser_adv_brain.runs.certificates import report_certificates
from ser_adv_brain.runs.datasets import checked_datasets
from ser_adv_brain.runs.finish import attack_settings, export_checkpoint, report_attacks
from ser_adv_brain.runs.reload import load_trained

__all__ = [
    "attack_settings",
    "checked_datasets",
    "export_checkpoint",
    "load_trained",
    "report_attacks",
    "report_certificates",
]
