"""Square Attack: scores only, never autograd; the query budget; the Linf budget; UAR by queries."""

import pytest
import torch

from ser_adv_brain.attacks import SquareAttack
from ser_adv_brain.attacks.square import margins, p_schedule
from ser_adv_brain.models import CNN4


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = CNN4(n_classes=4, base_channels=2)
    model.train()
    model(torch.randn(8, 20, 8))
    return model.eval()


class CountingScorer:
    """A score callable that counts the utterances it scores and whether autograd was on."""

    def __init__(self, model):
        self.model, self.rows, self.grad_enabled = model, 0, []

    def __call__(self, feats):
        self.rows += len(feats)
        self.grad_enabled.append(torch.is_grad_enabled())
        return torch.log_softmax(self.model(feats)[0], dim=-1)


def forbid_autograd(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Square Attack asked autograd for a gradient")

    monkeypatch.setattr(torch.autograd, "grad", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)


def test_square_never_calls_autograd(model, monkeypatch):
    forbid_autograd(monkeypatch)
    scorer = CountingScorer(model)
    x = torch.randn(6, 20, 8)
    result = SquareAttack(eps=0.5, max_queries=30, eta=None).run(scorer, x, None)
    assert scorer.grad_enabled and not any(scorer.grad_enabled)
    assert not result.adversarial.requires_grad
    # A model given directly is scored the same way, without autograd.
    grad_enabled = []
    model.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    again = SquareAttack(eps=0.5, max_queries=30, eta=None).run(model, x, None)
    assert grad_enabled and not any(grad_enabled)
    assert torch.equal(again.adversarial, result.adversarial) and torch.equal(again.queries, result.queries)


def test_square_stops_at_its_query_budget(model):
    """Utterances that are never fooled spend exactly the budget; the scorer sees exactly the queries counted."""
    x = torch.randn(6, 20, 8)
    scorer = CountingScorer(model)
    result = SquareAttack(eps=1e-4, max_queries=25, eta=None).run(scorer, x, None)  # too small to fool anything
    assert not result.fooled.any()
    assert result.queries.tolist() == [25] * 6
    assert scorer.rows == int(result.queries.sum())


def test_fooled_utterances_stop_costing_queries(model):
    x = torch.randn(8, 20, 8)
    scorer = CountingScorer(model)
    result = SquareAttack(eps=2.0, max_queries=200, eta=None).run(scorer, x, None)
    assert result.fooled.any()
    assert (result.queries[result.fooled] < 200).all()
    assert scorer.rows == int(result.queries.sum())
    predictions = model(result.adversarial)[0].argmax(dim=-1)
    assert torch.equal(predictions, result.predictions)
    assert torch.equal(result.fooled, predictions != result.labels)


@pytest.mark.parametrize("eps, eta", [(2.0, None), (3.0, 1.0)])
def test_every_output_lies_on_the_linf_budget(model, eps, eta):
    x = 3 * torch.randn(6, 20, 8)
    result = SquareAttack(eps=eps, max_queries=40, eta=eta).run(model, x, None)
    radius = eps if eta is None else eta
    delta = (result.adversarial - x).abs()
    assert (delta <= radius + 1e-6).all()
    assert (delta > radius - 1e-6).all()  # the stripes start every feature at a vertex, squares keep it there
    # What the attack scored is what it returns (the search itself stays inside eta).
    assert result.fooled.any()
    assert torch.equal(model(result.adversarial)[0].argmax(dim=-1), result.predictions)


def test_predictions_within_a_budget_give_uar_by_queries(model):
    x, targets = torch.randn(8, 20, 8), torch.tensor([0, 1, 2, 3] * 2)
    result = SquareAttack(eps=2.0, max_queries=100, eta=None, label_source="target").run(model, x, targets)
    correct = [int((result.predictions_within(q) == targets).sum()) for q in (1, 2, 10, 50, 100)]
    assert correct == sorted(correct, reverse=True)  # more queries never help the model
    assert torch.equal(result.predictions_within(100), result.predictions)
    clean = model(x)[0].argmax(dim=-1)
    assert correct[0] == int((clean == targets).sum())  # one query: the clean input's


def test_p_schedule_halves_on_the_papers_steps():
    assert p_schedule(0.8, 0, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 9999, 10000) == 0.8 / 512
    assert p_schedule(0.8, 10, 100) == p_schedule(0.8, 1000, 10000) == 0.8 / 16


def test_margin():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]))
    expected = torch.log(torch.tensor([0.5 / 0.3, 0.1 / 0.6]))
    assert torch.allclose(margins(log_probs, torch.tensor([0, 0])), expected)


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        (dict(max_queries=0), "max_queries"),
        (dict(p_init=0.0), "p_init"),
        (dict(p_init=1.5), "p_init"),
        (dict(eps=-1.0), "eps"),
    ],
)
def test_invalid_options_are_named(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        SquareAttack(**{"eps": 0.1, **kwargs})


def test_each_square_covers_the_share_p_of_the_input_and_can_lie_anywhere_inside_it():
    """A side of round(sqrt(p * frames * n_mels)) (Andriushchenko et al.), its corner uniform over
    every position that keeps the square inside: the first and the last row and column included."""
    attack = SquareAttack(eps=0.1, max_queries=10, p_init=0.05, eta=None, label_source="target")
    frames, n_mels = 20, 10
    side = round((p_schedule(0.05, 0, 10) * frames * n_mels) ** 0.5)
    assert side == 3
    corners = torch.tensor([0.0, 0.5, 0.9999])
    top, left = torch.meshgrid(corners, corners, indexing="ij")
    draws = torch.stack([torch.full_like(top.flatten(), 0.9), top.flatten(), left.flatten()], dim=1)
    out = attack.square(torch.zeros(len(draws), frames, n_mels), 0, 0.1, draws)
    for square, (_, row, col) in zip(out, draws.tolist()):
        cells = (square == 0.1).nonzero()
        assert len(cells) == side * side and float(square.abs().sum()) == pytest.approx(0.1 * side * side)
        first_row, first_col = int(row * (frames - side + 1)), int(col * (n_mels - side + 1))
        assert cells[:, 0].min() == first_row and cells[:, 0].max() == first_row + side - 1
        assert cells[:, 1].min() == first_col and cells[:, 1].max() == first_col + side - 1
    rows_reached = {int(c) for square in out for c in (square != 0).nonzero()[:, 0]}
    cols_reached = {int(c) for square in out for c in (square != 0).nonzero()[:, 1]}
    assert {0, frames - 1} <= rows_reached and {0, n_mels - 1} <= cols_reached
