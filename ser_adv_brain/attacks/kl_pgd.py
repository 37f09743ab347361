"""PGD on the KL divergence from the clean prediction: TRADES's inner maximisation (Zhang et al., ICML 2019)."""

import torch.nn.functional as F

from ser_adv_brain.attacks.pgd import PGD


class KLPGD(PGD):
    """``x' = argmax_{x' in B(x, eps)} KL(p(x) || p(x'))``, by PGD from a random start.

    ``p(x)`` is the softmax of the model at the clean input, computed once (in
    the attack's ``model_mode``, without a gradient) and then held fixed:
    the attack moves ``x'`` as far from the model's own belief as the ball
    allows, without any label. This is the fake data of TRADES
    (``TRADESObjective``); an utterance counts as fooled when the top class of
    ``p(x')`` differs from that of ``p(x)``.

    At ``x' = x`` the KL is at its minimum and its gradient is zero, so the
    attack needs a random start (TRADES starts at ``x + 0.001 * N(0, 1)``;
    here PGD's uniform start in the ball). The other arguments are PGD's;
    ``label_source`` and ``target_class`` do not apply.

    Example
    -------
    >>> import torch
    >>> from ser_adv_brain.models import CNN4
    >>> model, x = CNN4(base_channels=2).eval(), torch.randn(3, 20, 8)
    >>> x_adv = KLPGD(eps=0.05, steps=3).perturb(model, x, targets=None)
    >>> bool(((x_adv - x).abs() <= 0.05 + 1e-6).all())
    True
    """

    def __init__(self, eps, steps=10, rel_step_size=None, norm="linf", restarts=1, seed=0, eta=0.1, model_mode="eval"):
        super().__init__(
            eps,
            steps=steps,
            rel_step_size=rel_step_size,
            norm=norm,
            random_start=True,
            restarts=restarts,
            seed=seed,
            eta=eta,
            label_source="predicted",
            model_mode=model_mode,
        )

    def __repr__(self):
        return (
            f"{type(self).__name__}(eps={self.eps}, steps={self.steps}, rel_step_size={self.rel_step_size}, "
            f"norm={self.norm!r}, restarts={self.restarts}, seed={self.seed}, eta={self.eta}, "
            f"model_mode={self.model_mode!r})"
        )

    def labels(self, logits, targets):
        """The clean prediction ``p(x)``, a fixed distribution over the classes."""
        return F.softmax(logits.detach().float(), dim=-1)

    def loss(self, logits, labels):
        """Per-utterance ``KL(p(x) || p(x'))``, ``labels`` being ``p(x)``."""
        return F.kl_div(F.log_softmax(logits.float(), dim=-1), labels, reduction="none").sum(dim=-1)

    def succeeded(self, logits, labels):
        """The top class moved away from the clean prediction's."""
        return logits.argmax(dim=-1) != labels.argmax(dim=-1)
