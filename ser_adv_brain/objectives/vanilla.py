"""Vanilla adversarial training (Goodfellow et al., 2015; Ren et al., 2020)."""

from ser_adv_brain.objectives.base import AdversarialObjective, check_weights, classification_loss


class VanillaAdversarialObjective(AdversarialObjective):
    """``L^ = alpha * L(x) + (1 - alpha) * L(x')``.

    Arguments
    ---------
    alpha : float
        Weight of the real-data loss, in [0, 1] (0.5 in the authors' code).

    Example
    -------
    >>> import torch
    >>> objective = VanillaAdversarialObjective(alpha=0.5)
    >>> real = (torch.tensor([[2.0, 0.0]]), None)
    >>> fake = (torch.tensor([[0.0, 2.0]]), None)
    >>> parts = objective(real, fake, torch.tensor([0]))
    >>> round(float(parts["loss"]), 4)
    1.1269
    """

    def __init__(self, alpha=0.5):
        check_weights(alpha=alpha)
        self.alpha = float(alpha)

    @property
    def real_weight(self):
        return self.alpha

    def __repr__(self):
        return f"VanillaAdversarialObjective(alpha={self.alpha})"

    def __call__(self, real, fake, targets):
        real_loss = classification_loss(real[0], targets)
        fake_loss = classification_loss(fake[0], targets)
        loss = self.alpha * real_loss + (1.0 - self.alpha) * fake_loss
        return {"loss": loss, "real_loss": real_loss, "fake_loss": fake_loss}
