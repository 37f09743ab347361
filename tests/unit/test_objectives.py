"""Vanilla and similarity-based adversarial objectives against hand computations."""

import math

import pytest
import torch

from ser_adv_brain.objectives import (
    SimilarityAdversarialObjective,
    VanillaAdversarialObjective,
    classification_loss,
)
from ser_adv_brain.objectives.similarity import embedding_distance

REAL_LOGITS = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.5, -1.0]])
FAKE_LOGITS = torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
TARGETS = torch.tensor([0, 1])
REAL_EMB = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
FAKE_EMB = torch.tensor([[1.0, 3.0], [3.0, 4.0]])  # differences (0, 2) and (3, 4)


def nll(logits, target):
    """-log softmax(logits)[target], written out."""
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def mean_nll(logits, targets):
    return sum(nll(row.tolist(), int(t)) for row, t in zip(logits, targets)) / len(targets)


L_REAL = mean_nll(REAL_LOGITS, TARGETS)
L_FAKE = mean_nll(FAKE_LOGITS, TARGETS)
HAND_DISTANCES = {
    "mse": (0 + 4 + 9 + 16) / 4,  # mean over batch and dimensions (the authors')
    "l1": ((0 + 2) + (3 + 4)) / 2,  # ||v - v'||_1, batch mean
    "l2": (2.0 + 5.0) / 2,  # ||v - v'||_2, batch mean
}


def test_classification_loss_is_the_softmax_nll():
    assert float(classification_loss(REAL_LOGITS, TARGETS)) == pytest.approx(L_REAL)
    assert L_REAL == pytest.approx((math.log(1 + math.exp(-2) + math.exp(-1)) + math.log(2 + math.exp(-1.5))) / 2)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_vanilla(alpha):
    parts = VanillaAdversarialObjective(alpha)((REAL_LOGITS, REAL_EMB), (FAKE_LOGITS, FAKE_EMB), TARGETS)
    assert set(parts) == {"loss", "real_loss", "fake_loss"}
    assert float(parts["real_loss"]) == pytest.approx(L_REAL)
    assert float(parts["fake_loss"]) == pytest.approx(L_FAKE)
    assert float(parts["loss"]) == pytest.approx(alpha * L_REAL + (1 - alpha) * L_FAKE)


@pytest.mark.parametrize("distance", ["mse", "l1", "l2"])
@pytest.mark.parametrize("beta, gamma", [(0.3, 0.5), (0.2, 0.5), (0.6, 0.4), (0.7, 0.1), (0.0, 0.0)])
def test_similarity(distance, beta, gamma):
    objective = SimilarityAdversarialObjective(beta, gamma, distance)
    parts = objective((REAL_LOGITS, REAL_EMB), (FAKE_LOGITS, FAKE_EMB), TARGETS)
    assert set(parts) == {"loss", "real_loss", "fake_loss", "distance"}
    assert float(parts["distance"]) == pytest.approx(HAND_DISTANCES[distance])
    expected = beta * L_REAL + gamma * L_FAKE + (1 - beta - gamma) * HAND_DISTANCES[distance]
    assert float(parts["loss"]) == pytest.approx(expected)


def test_paper_defaults():
    assert VanillaAdversarialObjective().alpha == 0.5
    similarity = SimilarityAdversarialObjective()
    assert (similarity.beta, similarity.gamma, similarity.distance) == (0.4, 0.4, "mse")
    assert similarity.distance_weight == pytest.approx(0.2)


@pytest.mark.parametrize("detach", [False, True])
def test_distance_gradient_reaches_the_real_embedding_unless_detached(detach):
    real_emb = REAL_EMB.clone().requires_grad_(True)
    fake_emb = FAKE_EMB.clone().requires_grad_(True)
    objective = SimilarityAdversarialObjective(0.5, 0.3, "mse", detach_real_embedding=detach)
    objective((REAL_LOGITS, real_emb), (FAKE_LOGITS, fake_emb), TARGETS)["loss"].backward()
    # d/dv' of 0.2 * mean((v - v')^2) = 0.2 * 2 (v' - v) / 4
    assert torch.allclose(fake_emb.grad, 0.2 * 2 * (FAKE_EMB - REAL_EMB) / 4)
    if detach:
        assert real_emb.grad is None
    else:
        assert torch.allclose(real_emb.grad, -fake_emb.grad)
    assert objective.couples_real_branch is (not detach)


def test_real_branch_attributes():
    assert VanillaAdversarialObjective(0.3).real_weight == 0.3
    assert not VanillaAdversarialObjective(0.3).couples_real_branch
    assert SimilarityAdversarialObjective(0.3, 0.5).real_weight == 0.3  # beta, not gamma
    assert SimilarityAdversarialObjective(0.3, 0.5).distance_weight == pytest.approx(0.2)
    assert SimilarityAdversarialObjective(0.3, 0.5).couples_real_branch
    assert not SimilarityAdversarialObjective(0.3, 0.5, detach_real_embedding=True).couples_real_branch
    # With beta + gamma = 1 there is no distance term to couple the branches.
    assert not SimilarityAdversarialObjective(0.5, 0.5).couples_real_branch


@pytest.mark.parametrize("alpha", [-0.1, 1.1, float("nan"), float("inf")])
def test_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match="alpha"):
        VanillaAdversarialObjective(alpha)


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        (dict(beta=-0.1, gamma=0.4), "beta"),
        (dict(beta=0.4, gamma=-0.1), "gamma"),
        (dict(beta=1.2, gamma=0.0), "beta"),
        (dict(beta=0.6, gamma=0.5), r"beta \+ gamma .* = 1\.1$"),
        (dict(beta=0.4, gamma=0.4, distance="cosine"), "distance"),
    ],
)
def test_invalid_similarity_options(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        SimilarityAdversarialObjective(**kwargs)


def test_distance_is_the_authors_mse_by_default():
    assert float(embedding_distance(REAL_EMB, FAKE_EMB)) == pytest.approx(HAND_DISTANCES["mse"])
