"""Randomised smoothing (Cohen, Rosenfeld and Kolter, ICML 2019): the smoothed classifier's vote and certificate.

The smoothed classifier of a base classifier ``f`` is
``g(x) = argmax_c P(f(x + d) = c)``, ``d ~ N(0, sigma^2 I)``. Cohen et al.'s
Monte-Carlo algorithms decide it from votes of ``f`` on noisy copies of ``x``:

- PREDICT: ``n`` votes; the top class ``A`` unless a two-sided binomial test
  cannot tell its count from the runner-up's at level ``alpha`` (then: abstain);
- CERTIFY: ``n0`` votes choose ``A``; ``n`` more give a one-sided
  Clopper-Pearson lower bound ``pA`` at level ``1 - alpha`` on ``P(f(x + d) = A)``;
  if ``pA > 1/2``, ``g(x + delta) = A`` for every ``|delta|_2 < R = sigma * PhiInverse(pA)``,
  with probability at least ``1 - alpha`` over the votes; otherwise abstain.

The base classifier and its input are the caller's: the model on the
normalised log-Mel (``domain="features"``) or ``WaveformClassifier`` on the
samples (``domain="waveform"``). The noise is drawn on the CPU from a
generator seeded by the smoothing's ``seed``, the utterance's key and the
algorithm's stream (``attacks.base.keyed_seed``), as the attacks' keyed draws:
an utterance's votes, prediction and certificate do not depend on the other
utterances of its batch.
"""

import contextlib
import math
from typing import NamedTuple

import numpy as np
import scipy.stats
import torch

from ser_adv_brain.attacks.base import keyed_seed, modes_restored
from ser_adv_brain.checks import check_choice, check_non_negative, check_positive_int

ABSTAIN = -1  # the class index of an abstention
ABSTAIN_LABEL = "abstain"
SMOOTHING_DOMAINS = ("waveform", "features")
# The streams of noise draws, one per use, so that CERTIFY's selection and estimation votes are independent.
SELECTION, ESTIMATION, PREDICTION, ATTACK = "selection", "estimation", "prediction", "attack"


def clopper_pearson_lower(successes, trials, alpha):
    """The one-sided ``1 - alpha`` lower confidence bound on a binomial proportion (Clopper and Pearson, 1934).

    The ``alpha`` quantile of ``Beta(k, n - k + 1)`` for ``k`` successes in
    ``n`` trials; 0 for ``k = 0``. (Cohen et al.'s ``proportion_confint(...,
    alpha=2 * alpha, method="beta")[0]``.)

    Example
    -------
    >>> round(float(clopper_pearson_lower(100, 100, 0.001)), 5)  # alpha ** (1 / n) when every trial succeeds
    0.93325
    """
    k = np.asarray(torch.as_tensor(successes).cpu(), dtype=np.float64)
    bound = scipy.stats.beta.ppf(alpha, np.maximum(k, 1.0), trials - k + 1.0)
    return torch.from_numpy(np.where(k > 0, bound, 0.0))


class Prediction(NamedTuple):
    """What ``RandomizedSmoothing.predict`` returns."""

    prediction: torch.Tensor  # [batch] class indices, ABSTAIN where the vote is too close
    counts: torch.Tensor  # [batch, classes] the votes of the n noisy copies


class Certificate(NamedTuple):
    """What ``RandomizedSmoothing.certify`` returns."""

    prediction: torch.Tensor  # [batch] class indices, ABSTAIN where pA <= 1/2
    p_lower: torch.Tensor  # [batch] float64, the lower confidence bound pA on the chosen class's vote
    radius: torch.Tensor  # [batch] float64, the certified L2 radius (0 where abstaining)


class NoisyClassifier(torch.nn.Module):
    """The base classifier on noisy inputs, what an attack on a smoothed classifier sees.

    Each forward pass draws fresh noise: ``draws = 1`` gives ``base(x + sigma * n)``,
    ``n ~ N(0, I)``, the randomised model of AutoAttack's ``rand`` version
    (``APGD(eot_iter=20)`` averages its gradients over as many passes:
    expectation over transformation). With ``draws = m > 1`` a pass returns
    the log of the mean softmax over ``m`` noisy copies, a Monte-Carlo
    estimate of the soft smoothed classifier ``E_n[softmax(base(x + sigma n))]``
    that Salman et al. (NeurIPS 2019) attack. An attack's own success checks
    (which utterances to attack at all, which iterate fooled the model) read
    one pass: on one noisy copy they would skip an utterance that a single
    draw happens to misclassify, on ``m`` they read the smoothed vote's soft
    estimate. The noise comes from ``generator`` (on the CPU), never from
    torch's global one; the embedding is the mean over the copies.

    Arguments
    ---------
    base : torch.nn.Module
        Inputs -> ``(logits, embedding)``.
    sigma : float
    generator : torch.Generator
    draws : int
        Noisy copies per forward pass.

    Example
    -------
    >>> base = lambda x: (torch.cat([x, -x], dim=1), x)
    >>> noisy = NoisyClassifier(base, sigma=1.0, generator=torch.Generator().manual_seed(0), draws=1000)
    >>> log_probs, _ = noisy(torch.zeros(1, 1))
    >>> [round(p, 1) for p in log_probs.exp()[0].tolist()]  # a tie on average
    [0.5, 0.5]
    """

    def __init__(self, base, sigma, generator, draws=1):
        super().__init__()
        check_positive_int(draws=draws)
        self.base, self.sigma, self.generator, self.draws = base, float(sigma), generator, draws

    def forward(self, inputs):
        copies = inputs.repeat_interleave(self.draws, dim=0) if self.draws > 1 else inputs
        noise = torch.randn(copies.shape, generator=self.generator)
        logits, embedding = self.base(copies + self.sigma * noise.to(inputs))
        if self.draws == 1:
            return logits, embedding
        log_probs = torch.log_softmax(logits.float(), dim=-1).view(len(inputs), self.draws, -1)
        mean = torch.logsumexp(log_probs, dim=1) - math.log(self.draws)  # log of the mean softmax, stably
        return mean, None if embedding is None else embedding.view(len(inputs), self.draws, -1).mean(dim=1)


class RandomizedSmoothing:
    """Cohen et al.'s smoothed classifier ``g`` of a base classifier: PREDICT and CERTIFY (see the module docstring).

    Arguments
    ---------
    sigma : float
        Standard deviation of the noise, in the units of the domain's input
        (full-scale samples; z-score units of the features).
    domain : str
        ``"waveform"`` or ``"features"``: where the noise is added, so which
        base classifier the caller passes.
    n0 : int
        Votes that choose the class to certify (100 in Cohen et al.).
    n : int
        Votes that bound its probability, and PREDICT's votes (100,000 in Cohen et al.).
    alpha : float
        Failure probability of the certificate and level of PREDICT's test (0.001).
    batch_size : int
        Noisy copies per forward pass (the votes do not depend on it).
    seed : int
        Seed of the noise draws (with each utterance's key).

    Example
    -------
    >>> linear = lambda x: (torch.stack([-x.sum(dim=1), x.sum(dim=1)], dim=1), None)  # class 1 iff sum(x) > 0
    >>> smoothing = RandomizedSmoothing(sigma=1.0, domain="features", n0=10, n=1000)
    >>> certificate = smoothing.certify(linear, torch.tensor([[2.0]]), keys=["a"])
    >>> int(certificate.prediction), bool(1.5 < float(certificate.radius) <= 2.0)  # the margin is 2
    (1, True)
    """

    def __init__(self, sigma, domain="waveform", n0=100, n=1000, alpha=0.001, batch_size=100, seed=0):
        check_non_negative(sigma=sigma)
        if float(sigma) == 0.0:
            raise ValueError("sigma must be > 0: without noise nothing is smoothed, and no radius is certified.")
        check_choice("domain", domain, SMOOTHING_DOMAINS)
        check_positive_int(n0=n0, n=n, batch_size=batch_size)
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
        self.sigma, self.domain, self.n0, self.n = float(sigma), domain, n0, n
        self.alpha, self.batch_size, self.seed = float(alpha), batch_size, seed
        self.generator = torch.Generator().manual_seed(seed)  # for inputs without keys

    def __repr__(self):
        return (
            f"RandomizedSmoothing(sigma={self.sigma}, domain={self.domain!r}, n0={self.n0}, n={self.n}, "
            f"alpha={self.alpha}, batch_size={self.batch_size}, seed={self.seed})"
        )

    def with_options(self, **options):
        """A copy with some arguments replaced (``sigma=0.5``, ``n=10000``)."""
        arguments = {key: getattr(self, key) for key in ("sigma", "domain", "n0", "n", "alpha", "batch_size", "seed")}
        return RandomizedSmoothing(**{**arguments, **options})

    @property
    def max_radius(self):
        """The largest radius ``n`` votes can certify: every vote for the class, ``pA = alpha^(1/n)``."""
        return self.sigma * float(scipy.stats.norm.ppf(float(clopper_pearson_lower(self.n, self.n, self.alpha))))

    def generators(self, count, keys, stream):
        """One generator per utterance: keyed by ``(seed, key, stream)``, or the smoothing's own without keys."""
        if keys is None:
            return [self.generator] * count
        if len(keys) != count:
            raise ValueError(f"{len(keys)} keys for {count} inputs: give one key per utterance.")
        return [torch.Generator().manual_seed(keyed_seed(self.seed, key, stream)) for key in keys]

    def vote_counts(self, base, inputs, n, keys=None, stream=PREDICTION):
        """``[batch, classes]``: how often ``base`` (eval mode, no autograd) picks each class on ``n`` noisy copies."""
        counts, module = [], isinstance(base, torch.nn.Module)
        with modes_restored(base) if module else contextlib.nullcontext(), torch.no_grad():
            if module:
                base.eval()
            for x, generator in zip(inputs, self.generators(len(inputs), keys, stream)):
                votes, remaining = None, n
                while remaining:
                    size = min(self.batch_size, remaining)
                    # One draw per copy: torch's draws of a chunk depend on its size, and the votes must not.
                    noise = torch.stack([torch.randn(x.shape, generator=generator) for _ in range(size)]).to(x)
                    logits, _ = base(x.unsqueeze(0) + self.sigma * noise)
                    chosen = torch.bincount(logits.argmax(dim=-1).cpu(), minlength=logits.shape[-1])
                    votes = chosen if votes is None else votes + chosen
                    remaining -= size
                counts.append(votes)
        return torch.stack(counts)

    def predict(self, base, inputs, keys=None):
        """Cohen et al.'s PREDICT: the top class of ``n`` votes, or ``ABSTAIN`` where a two-sided binomial
        test of its count against the runner-up's (``nA`` of ``nA + nB``, p = 1/2) has a p-value above ``alpha``."""
        counts = self.vote_counts(base, inputs, self.n, keys, PREDICTION)
        top = counts.topk(2, dim=1)
        prediction = top.indices[:, 0].clone()
        for row, (first, second) in enumerate(top.values.tolist()):
            if scipy.stats.binomtest(first, first + second, 0.5).pvalue > self.alpha:
                prediction[row] = ABSTAIN
        return Prediction(prediction, counts)

    def certify(self, base, inputs, keys=None):
        """Cohen et al.'s CERTIFY: per utterance the class, ``pA`` and the L2 radius (see the module docstring)."""
        chosen = self.vote_counts(base, inputs, self.n0, keys, SELECTION).argmax(dim=1)
        counts = self.vote_counts(base, inputs, self.n, keys, ESTIMATION)
        p_lower = clopper_pearson_lower(counts.gather(1, chosen.unsqueeze(1)).squeeze(1), self.n, self.alpha)
        certified = p_lower > 0.5
        radius = self.sigma * torch.from_numpy(scipy.stats.norm.ppf(p_lower.numpy()))
        return Certificate(
            torch.where(certified, chosen, ABSTAIN), p_lower, torch.where(certified, radius, 0.0).double()
        )

    def noisy_classifier(self, base, key=None, stream=ATTACK, draws=1):
        """``NoisyClassifier(base, sigma, draws=draws)`` drawing from the generator of ``key`` (the smoothing's
        own without one)."""
        (generator,) = self.generators(1, None if key is None else [key], stream)
        return NoisyClassifier(base, self.sigma, generator, draws)
