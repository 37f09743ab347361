"""The checkpoint plug-ins' path in yaml files (``!new:ser_adv_brain.checkpoints.AtomicCheckpointer``): they live
in ``ser_adv_brain.training.checkpoints``."""

from ser_adv_brain.training.checkpoints import AtomicCheckpointer, GeneratorStates, RandomState

__all__ = ["AtomicCheckpointer", "GeneratorStates", "RandomState"]
