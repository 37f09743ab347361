"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019)."""

import torch.nn.functional as F

from ser_adv_brain.objectives.base import AdversarialObjective, classification_loss
from ser_adv_brain.objectives.similarity import DISTANCES, embedding_distance


def prediction_kl(real_logits, fake_logits):
    """``KL(p(x) || p(x'))`` of the softmax predictions, summed over classes, averaged over the batch."""
    log_p, log_q = F.log_softmax(real_logits.float(), dim=-1), F.log_softmax(fake_logits.float(), dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


class TRADESObjective(AdversarialObjective):
    """``L^ = L(x) + beta * KL(p(x) || p(x')) [+ lambda * d(v, v')]``.

    ``L(x)`` is the loss on real data only; the KL term pulls the prediction on
    the fake input ``x'`` onto the prediction on the real one, and its
    gradient reaches both branches, as in Zhang et al.'s code. ``x'`` is made
    to maximise that same KL (``ser_adv_brain.attacks.KLPGD``).

    ``distance_weight`` (lambda) adds the paper's similarity distance
    ``d(v, v')`` between the embeddings that feed the final layer (Ren et al.,
    ICASSP 2020; see ``SimilarityAdversarialObjective``); 0 is plain TRADES.

    Arguments
    ---------
    beta : float
        Weight of the KL term, >= 0 (Zhang et al. use 6, i.e. 1/lambda = 6).
    distance_weight : float
        Weight of ``d(v, v')``, >= 0.
    distance : str
        ``"mse"`` (the authors' code), ``"l1"`` or ``"l2"``: see ``embedding_distance``.

    Example
    -------
    >>> import torch
    >>> real = (torch.tensor([[2.0, 0.0]]), None)
    >>> parts = TRADESObjective(beta=6.0)(real, real, torch.tensor([0]))
    >>> float(parts["kl"])  # the same prediction on real and fake data
    0.0
    """

    real_weight = 1.0
    couples_real_branch = True  # the KL term sends gradient into the real branch

    def __init__(self, beta=6.0, distance_weight=0.0, distance="mse"):
        for name, value in (("beta", beta), ("distance_weight", distance_weight)):
            if not 0.0 <= float(value) < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        self.beta = float(beta)
        self.distance_weight = float(distance_weight)
        self.distance = distance

    def __repr__(self):
        return f"TRADESObjective(beta={self.beta}, distance_weight={self.distance_weight}, distance={self.distance!r})"

    def __call__(self, real, fake, targets):
        real_loss = classification_loss(real[0], targets)
        kl = prediction_kl(real[0], fake[0])
        parts = {"loss": real_loss + self.beta * kl, "real_loss": real_loss, "kl": kl}
        if self.distance_weight > 0:
            parts["distance"] = embedding_distance(real[1], fake[1], self.distance)
            parts["loss"] = parts["loss"] + self.distance_weight * parts["distance"]
        return parts
