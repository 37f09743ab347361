"""Similarity-based adversarial training (Ren et al., ICASSP 2020)."""

import torch

from ser_adv_brain.objectives.base import AdversarialObjective, check_weights, classification_loss

DISTANCES = ("mse", "l1", "l2")


def embedding_distance(real, fake, distance="mse"):
    """Distance between real and fake embeddings, averaged over the batch.

    ``"mse"``: the authors' mean squared error over batch and dimensions.
    ``"l1"`` / ``"l2"``: the norm ``||v - v'||_n`` of the paper, per example.
    """
    diff = (real - fake).float()
    if distance == "mse":
        return (diff**2).mean()
    order = 1 if distance == "l1" else 2
    return torch.linalg.vector_norm(diff, ord=order, dim=-1).mean()


class SimilarityAdversarialObjective(AdversarialObjective):
    """``L^ = beta * L(x) + gamma * L(x') + (1 - beta - gamma) * d(v, v')``.

    ``v`` and ``v'`` are the embeddings that feed the final fully connected
    layer for the real and the fake input: the distance pulls the fake
    representation onto the real one.

    Arguments
    ---------
    beta : float
        Weight of the real-data loss (0.4 in the authors' code).
    gamma : float
        Weight of the fake-data loss (0.4); ``beta + gamma <= 1``.
    distance : str
        ``"mse"`` (the authors' code), ``"l1"`` or ``"l2"`` (the paper's norm of order n).
    detach_real_embedding : bool
        If True, ``v`` is a fixed anchor and the distance trains the fake
        branch only. That is not the authors' choice, but it lets a training
        step with target labels and train-mode attacks share one backward
        pass for the input gradient and the real loss (see the Brain).

    Example
    -------
    >>> objective = SimilarityAdversarialObjective(beta=0.4, gamma=0.4)
    >>> real = (torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    >>> fake = (torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 3.0]]))
    >>> round(float(objective(real, fake, torch.tensor([0]))["distance"]), 4)
    2.0
    """

    def __init__(self, beta=0.4, gamma=0.4, distance="mse", detach_real_embedding=False):
        check_weights(beta=beta, gamma=gamma)
        if beta + gamma > 1.0 + 1e-9:
            raise ValueError(
                f"beta + gamma must be <= 1 (the distance's weight is 1 - beta - gamma), "
                f"got beta={beta} + gamma={gamma} = {beta + gamma}"
            )
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.distance = distance
        self.detach_real_embedding = bool(detach_real_embedding)

    @property
    def real_weight(self):
        return self.beta

    @property
    def distance_weight(self):
        return max(0.0, 1.0 - self.beta - self.gamma)

    @property
    def couples_real_branch(self):
        return self.distance_weight > 0 and not self.detach_real_embedding

    def __repr__(self):
        return (
            f"SimilarityAdversarialObjective(beta={self.beta}, gamma={self.gamma}, "
            f"distance={self.distance!r}, detach_real_embedding={self.detach_real_embedding})"
        )

    def __call__(self, real, fake, targets):
        real_loss = classification_loss(real[0], targets)
        fake_loss = classification_loss(fake[0], targets)
        anchor = real[1].detach() if self.detach_real_embedding else real[1]
        distance = embedding_distance(anchor, fake[1], self.distance)
        loss = self.beta * real_loss + self.gamma * fake_loss + self.distance_weight * distance
        return {"loss": loss, "real_loss": real_loss, "fake_loss": fake_loss, "distance": distance}
