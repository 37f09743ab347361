"""Square Attack: a score-based black box under a query budget (Andriushchenko et al., ECCV 2020)."""

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ser_adv_brain.attacks.base import Attack, random_rows
from ser_adv_brain.checks import check_positive_int

# Iterations (out of 10 000, rescaled to the query budget) after which the
# square's area p is halved again: the schedule of the paper's code.
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init, iteration, max_queries):
    """The share of the input that the square covers at ``iteration`` (halved at each of ``P_HALVINGS``)."""
    scaled = int(iteration / max_queries * 10000)
    return p_init / 2 ** sum(scaled > step for step in P_HALVINGS)


def log_probabilities(output):
    """Log posteriors from what a scorer returns: logits, log-probabilities, or a model's ``(logits, embedding)``."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    return F.log_softmax(output.float(), dim=-1)  # idempotent on log-probabilities


def margins(log_probs, labels):
    """``log p(y) - max_{k != y} log p(k)``: negative once the prediction has left ``y``."""
    own = log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = log_probs.scatter(1, labels.unsqueeze(1), float("-inf")).amax(dim=1)
    return own - others


class SquareResult(NamedTuple):
    """What ``SquareAttack.run`` returns (per utterance, except ``adversarial``'s shape)."""

    adversarial: torch.Tensor  # the inputs with the best perturbation found
    queries: torch.Tensor  # scores asked for, the clean input's included, until fooled or out of budget
    fooled: torch.Tensor  # whether the prediction left its label within the budget
    labels: torch.Tensor  # the labels attacked (true or predicted, by label_source)
    predictions: torch.Tensor  # the prediction on ``adversarial``

    def predictions_within(self, max_queries):
        """The prediction each utterance would have had with a budget of ``max_queries``, for UAR-by-queries curves.

        An utterance not yet fooled is still predicted as its label; a fooled
        one keeps the prediction it was fooled into (the attack stops there).
        """
        fooled_by_then = self.fooled & (self.queries <= max_queries)
        return torch.where(fooled_by_then, self.predictions, self.labels)


class SquareAttack(Attack):
    """Random square-shaped updates at the vertices of the Linf ball, kept when the margin falls.

    The attack sees only output scores: it never asks for a gradient and runs
    entirely without autograd. Features are treated as a one-channel image
    (frames x Mel bins). It starts from vertical stripes (each Mel bin
    shifted by +-eps for the whole utterance), then repeatedly sets a random
    ``s x s`` window to one random ``+-eps`` value, ``s = round(sqrt(p * frames * n_mels))``,
    and keeps the change if the margin ``log p(y) - max_{k != y} log p(k)``
    falls; ``p`` starts at ``p_init`` and is halved on the paper's schedule.
    An utterance stops costing queries once fooled (margin < 0).

    Arguments
    ---------
    eps : float
        Linf radius on the features (clipped to ``eta`` when that is smaller).
    max_queries : int
        Scores asked for per utterance, the clean input's included (>= 1).
    p_init : float
        Initial share of the input covered by the square, in (0, 1].
    seed : int
        Seed of the attack's own random generator.
    eta, label_source :
        See ``Attack``. The model is always scored in eval mode.

    Example
    -------
    >>> from ser_adv_brain.models import CNN4
    >>> model, x = CNN4(base_channels=2), torch.randn(3, 20, 8)
    >>> result = SquareAttack(eps=0.1, max_queries=20).run(model, x, targets=None)
    >>> bool((result.queries <= 20).all()), bool(((result.adversarial - x).abs() <= 0.1 + 1e-6).all())
    (True, True)
    """

    domain = "features"
    norm = "linf"
    black_box = True  # scores only, no gradient
    reports = ("queries",)

    def __init__(self, eps, max_queries=1000, p_init=0.05, seed=0, eta=0.1, label_source="predicted"):
        super().__init__(eps, eta=eta, label_source=label_source, model_mode="eval")
        check_positive_int(max_queries=max_queries)
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        self.max_queries = max_queries
        self.p_init = float(p_init)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def __repr__(self):
        return f"{super().__repr__()[:-1]}, max_queries={self.max_queries}, p_init={self.p_init}, seed={self.seed})"

    @contextlib.contextmanager
    def scorer(self, scores):
        """``features -> log posteriors`` without autograd; a module is put in eval mode, then restored."""
        if isinstance(scores, torch.nn.Module):
            with self.generation_mode(scores, grad=False):
                yield lambda feats: log_probabilities(scores(feats))
        else:
            with torch.no_grad():
                yield lambda feats: log_probabilities(scores(feats))

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, keys=None):
        """The adversarial features of ``run`` (``loss_scale`` and ``gradient`` do not apply: no gradients here)."""
        return self.run(model, inputs, targets, eps, keys).adversarial

    def run(self, scores, inputs, targets, eps=None, keys=None):
        """Attacks a batch of features under the query budget.

        Arguments
        ---------
        scores : callable or torch.nn.Module
            Maps features ``[batch, frames, n_mels]`` to log posteriors
            (``lambda f: recognizer.classify_features(f)[0]``), logits, or
            ``(logits, embedding)`` (a model of this toolkit).
        inputs : torch.Tensor
            ``[batch, frames, n_mels]`` features.
        targets : torch.Tensor or None
            True labels (for ``label_source="target"``).
        eps : float or None
            Overrides the attack's budget.
        keys : list or None
            One per utterance (its ID): each utterance's squares are then
            drawn from its own generator (see ``random_rows``), so they do not
            depend on the rest of the batch. None: from the attack's generator.

        Returns
        -------
        SquareResult
        """
        eps = self.eps if eps is None else eps
        self.check_budget(eps)
        radius = eps if self.eta is None else min(eps, self.eta)
        x = inputs.detach()
        batch, frames, n_mels = x.shape
        # Every draw up front, per utterance: the stripes' signs, then per iteration a sign, a top and a left.
        stripes, draws = random_rows(
            [(batch, n_mels), (batch, max(self.max_queries - 2, 0), 3)],
            self.generator,
            keys,
            self.seed,
            draw=[torch.rand, torch.rand],
        )
        stripes, draws = stripes.to(x.device), draws.to(x.device)
        with self.scorer(scores) as score:
            log_probs = score(x)
            labels = self.labels(log_probs, targets)
            best_margin = margins(log_probs, labels)
            predictions = log_probs.argmax(dim=-1)
            queries = torch.ones(batch, dtype=torch.long, device=x.device)
            best_delta = torch.zeros_like(x)
            for iteration in range(self.max_queries - 1):
                todo = (best_margin >= 0).nonzero().view(-1)
                if radius == 0 or len(todo) == 0:
                    break
                if iteration == 0:
                    candidate = self.vertices(radius, stripes[todo]).to(x.dtype).unsqueeze(1).expand(-1, frames, -1)
                else:
                    candidate = self.square(best_delta[todo], iteration, radius, draws[todo, iteration - 1])
                log_probs = score(x[todo] + candidate)
                queries[todo] += 1
                margin = margins(log_probs, labels[todo])
                # The stripes are the starting point, taken whatever their margin.
                improved = margin < best_margin[todo] if iteration > 0 else torch.ones_like(margin, dtype=torch.bool)
                keep = todo[improved]
                best_delta[keep], best_margin[keep] = candidate[improved], margin[improved]
                predictions[keep] = log_probs.argmax(dim=-1)[improved]
        return SquareResult(self.project(x + best_delta, x), queries, best_margin < 0, labels, predictions)

    def square(self, delta, iteration, radius, draws):
        """``delta`` with one random square set to one random vertex value, per utterance.

        ``draws`` holds each utterance's three uniform numbers for this iteration: the sign, the top, the left.
        """
        batch, frames, n_mels = delta.shape
        signs = self.vertices(radius, draws[:, 0]).to(delta.dtype).view(-1, 1, 1)
        p = p_schedule(self.p_init, iteration, self.max_queries)
        side = min(max(int(round(math.sqrt(p * frames * n_mels))), 1), frames, n_mels)
        top = (draws[:, 1] * (frames - side + 1)).long().view(-1, 1, 1)
        left = (draws[:, 2] * (n_mels - side + 1)).long().view(-1, 1, 1)
        rows = torch.arange(frames, device=delta.device).view(1, -1, 1)
        cols = torch.arange(n_mels, device=delta.device).view(1, 1, -1)
        window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        # A window already at the drawn value would waste a query: take the other vertex (the paper resamples).
        unchanged = ((delta == signs) | ~window).flatten(1).all(dim=1).view(-1, 1, 1)
        signs = torch.where(unchanged, -signs, signs)
        return torch.where(window, signs, delta)

    @staticmethod
    def vertices(radius, uniform):
        """``+-radius`` from uniform draws in [0, 1) (below one half: ``-radius``)."""
        return torch.where(uniform < 0.5, -radius, radius)
