"""The difference-of-logits-ratio loss of AutoAttack (Croce and Hein, ICML 2020), untargeted and targeted.

With the logits ``z`` sorted in decreasing order, ``z_pi1 >= z_pi2 >= ...``:

- untargeted: ``DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``;
- targeted at class ``t``: ``DLR_t(z, y) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

Both are unchanged when the logits are shifted or scaled by a positive factor,
so a defence that only rescales its logits (a saturated softmax, a temperature)
cannot flatten them the way it flattens the cross-entropy. The denominators need
the third (untargeted) and fourth (targeted) largest logits: at least 3, resp. 4
classes.
"""

import torch

# The classes each loss needs: its denominator reads the 3rd, resp. 4th, largest logit.
DLR_MIN_CLASSES = 3
TARGETED_DLR_MIN_CLASSES = 4
EPSILON = 1e-12  # keeps the ratio finite where the top logits are equal


def at_least_float32(logits):
    """Half-precision logits in float32 (the ratio of small differences needs it); float64 stays."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def check_classes(n_classes, targeted, culprit):
    """Raises a ``ValueError`` naming ``culprit`` when the DLR loss cannot be computed for ``n_classes``."""
    needed = TARGETED_DLR_MIN_CLASSES if targeted else DLR_MIN_CLASSES
    if n_classes < needed:
        kind = "the targeted DLR loss" if targeted else "the DLR loss"
        raise ValueError(
            f"{culprit}: {kind} needs at least {needed} classes, the model has {n_classes}; use loss='ce'."
        )


def dlr_loss(logits, labels):
    """Per-utterance untargeted DLR loss (see the module docstring); ``labels`` are the classes attacked.

    Example
    -------
    >>> z = torch.tensor([[4.0, 3.0, 1.0, 0.0]])
    >>> float(dlr_loss(z, torch.tensor([0])))  # -(4 - 3) / (4 - 1)
    -0.3333333432674408
    >>> bool(torch.allclose(dlr_loss(3 * z + 7, torch.tensor([0])), dlr_loss(z, torch.tensor([0]))))
    True
    """
    logits = at_least_float32(logits)
    check_classes(logits.shape[-1], targeted=False, culprit="dlr_loss")
    ordered = logits.sort(dim=-1, descending=True).values
    own = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    best_other = logits.scatter(1, labels.view(-1, 1), float("-inf")).amax(dim=1)
    return -(own - best_other) / (ordered[:, 0] - ordered[:, 2] + EPSILON)


def targeted_dlr_loss(logits, labels, target_labels):
    """Per-utterance targeted DLR loss towards ``target_labels`` (see the module docstring).

    Example
    -------
    >>> z = torch.tensor([[4.0, 3.0, 1.0, 0.0]])
    >>> float(targeted_dlr_loss(z, torch.tensor([0]), torch.tensor([2])))  # -(4 - 1) / (4 - (1 + 0) / 2)
    -0.8571428656578064
    """
    logits = at_least_float32(logits)
    check_classes(logits.shape[-1], targeted=True, culprit="targeted_dlr_loss")
    ordered = logits.sort(dim=-1, descending=True).values
    own = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    target = logits.gather(1, target_labels.view(-1, 1)).squeeze(1)
    return -(own - target) / (ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2 + EPSILON)
