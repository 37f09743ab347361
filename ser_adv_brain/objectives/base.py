"""What the training objectives share: the classification loss and weight checks."""

import math

import torch.nn.functional as F


def classification_loss(logits, targets):
    """Negative log-likelihood of a softmax classifier (mean over the batch)."""
    return F.cross_entropy(logits.float(), targets)


def check_weights(**weights):
    """Raises a ``ValueError`` naming any weight outside [0, 1] or not finite."""
    for name, value in weights.items():
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


class AdversarialObjective:
    """Base of the losses that combine a real batch and its adversarial (fake) twin.

    ``__call__(real, fake, targets)`` takes ``(logits, embedding)`` pairs and
    returns a dict with the total ``loss`` and its parts, for logging.

    Two attributes tell the Brain how the loss depends on the real branch,
    which decides how cheaply a training step can be run:
    ``real_weight`` (the weight of ``L(x)``) and ``couples_real_branch``
    (whether anything but ``real_weight * L(x)`` sends gradient into it).
    """

    real_weight = 1.0
    couples_real_branch = False

    def __call__(self, real, fake, targets):
        raise NotImplementedError
