"""Projected gradient descent on the model input, Linf or L2 (Madry et al., ICLR 2018)."""

import torch

from ser_adv_brain.attacks.base import GradientAttack, random_rows
from ser_adv_brain.checks import check_non_negative, check_positive_int

PGD_NORMS = ("linf", "l2")


def rows(value, index):
    """``value[index]`` for a per-utterance tensor; a scalar (the same for every utterance) as it is."""
    return value[index] if torch.is_tensor(value) and value.dim() > 0 else value


def l2_norms(tensor):
    """Euclidean norm of each utterance (all but the first axis), shaped to broadcast against it."""
    return tensor.flatten(1).norm(dim=1).view(-1, *[1] * (tensor.dim() - 1))


class PGD(GradientAttack):
    """``x_{t+1} = P(x_t + alpha * d(grad_x L(w, x_t, y)))``, ``steps`` times, from ``x_0``.

    ``P`` projects onto the budget around the clean input ``x`` (then clips
    to ``[x - eta, x + eta]``); ``d`` is ``sign(g)`` for ``norm="linf"`` (the
    ball ``|x' - x|_inf <= eps``) and ``g / |g|_2`` per utterance for
    ``norm="l2"`` (the ball ``|x' - x|_2 <= eps``, the norm taken over each
    utterance's frames and Mel bins). ``alpha = rel_step_size * eps``.
    ``x_0`` is a random point of the ball (``random_start``: uniform in the
    Linf ball; for L2 a random direction at a uniform radius), or ``x``
    itself: without random start this is BIM, the basic iterative method
    (Kurakin et al., 2017). Targeted (``target_class`` set), ``L`` is the
    negated cross-entropy of the target class. With ``steps=1``,
    ``rel_step_size=1`` and no random start, Linf PGD is FGSM.

    With ``restarts > 1`` each utterance keeps its worst restart: the first
    that succeeds (prediction off its label, or onto the target), else the
    one with the highest loss. A restart after the first attacks only the
    utterances that no earlier restart fooled.

    Arguments
    ---------
    eps : float
        Radius of the ball (see ``norm``).
    steps : int
        Gradient steps per restart (>= 1).
    rel_step_size : float or None
        Step length as a fraction of eps; None: ``2.5 / steps`` (Madry et al.).
    norm : str
        ``"linf"`` or ``"l2"``.
    random_start : bool
        Start from a uniform random point of the ball (else BIM).
    restarts : int
        Random starts per utterance (>= 1; more than one needs ``random_start``).
    seed : int
        Seed of the attack's own random generator (random starts only): the
        same calls in the same order give the same results, and torch's
        global random stream is never touched. Without ``keys`` the generator
        advances with every call, and each call draws the starts of its whole
        batch, so an utterance's start depends on its place in the batch and
        on the calls before; with ``keys`` (see ``perturb``) it depends on the
        seed and the utterance's key only.
    stop_when_fooled : bool
        An utterance whose iterate already succeeds keeps it and takes no
        more steps (its gradient pass showed the success): an evaluation gets
        the same verdict or a stronger one (a success on the way is kept) for
        fewer passes. Off by default: training attacks take every step.
    eta, label_source, model_mode, target_class, class_names :
        See ``GradientAttack``. ``eta`` (0.1 by default, as FGSM's) clips every
        feature on top of the ball, for either norm; None: the ball alone.

    Example
    -------
    >>> import torch
    >>> from ser_adv_brain.models import CNN4
    >>> model, x = CNN4(base_channels=2), torch.randn(3, 20, 8)
    >>> attack = PGD(eps=0.05, steps=3, norm="l2", eta=None)
    >>> x_adv = attack.perturb(model, x, targets=None)
    >>> bool(((x_adv - x).flatten(1).norm(dim=1) <= 0.05 + 1e-6).all())
    True
    """

    domain = "features"

    def __init__(
        self,
        eps,
        steps=10,
        rel_step_size=None,
        norm="linf",
        random_start=True,
        restarts=1,
        seed=0,
        stop_when_fooled=False,
        eta=0.1,
        label_source="predicted",
        model_mode="eval",
        target_class=None,
        class_names=None,
    ):
        super().__init__(
            eps,
            eta=eta,
            label_source=label_source,
            model_mode=model_mode,
            target_class=target_class,
            class_names=class_names,
            norm=norm,
        )
        check_positive_int(steps=steps, restarts=restarts)
        rel_step_size = 2.5 / steps if rel_step_size is None else rel_step_size
        check_non_negative(rel_step_size=rel_step_size)
        if restarts > 1 and not random_start:
            raise ValueError(f"restarts={restarts} needs random_start=True: restarts without it are identical.")
        self.steps = steps
        self.rel_step_size = float(rel_step_size)
        self.random_start = bool(random_start)
        self.restarts = restarts
        self.seed = seed
        self.stop_when_fooled = bool(stop_when_fooled)
        self.generator = torch.Generator().manual_seed(seed) if self.random_start else None

    @staticmethod
    def norms():
        """The norms this attack accepts."""
        return PGD_NORMS

    def __repr__(self):
        return (
            f"{super().__repr__()[:-1]}, steps={self.steps}, rel_step_size={self.rel_step_size}, "
            f"norm={self.norm!r}, random_start={self.random_start}, restarts={self.restarts}, seed={self.seed}"
            + (", stop_when_fooled=True)" if self.stop_when_fooled else ")")
        )

    @property
    def uses_given_gradient(self):
        """Only a start at the clean inputs uses the caller's gradient there, and only without
        ``stop_when_fooled``: stopping needs the logits of the first gradient pass, to leave an
        utterance the clean input already fools where it is."""
        return not (self.random_start or self.stop_when_fooled)

    def radius(self, inputs, eps, mask=None):
        """The ball's radius for each utterance (here eps for all)."""
        self.check_budget(eps)
        return float(eps)

    def ascend(self, adversarial, grad, step):
        """One step of length ``step`` up the gradient, in the norm's steepest direction."""
        if self.norm == "linf":
            return adversarial + step * grad.sign()
        return torch.addcmul(adversarial, grad, step / l2_norms(grad).clamp_min(1e-12))  # one pass over the input

    def project_ball(self, adversarial, inputs, radius, mask=None):
        """Projects onto the ``radius`` ball around ``inputs``, then clips to the eta-ball.

        ``mask`` (1 where the input is real, 0 on padding), if given, zeroes
        the perturbation on the padding first.
        """
        if mask is not None:
            adversarial = inputs + (adversarial - inputs) * mask
        if self.norm == "linf":
            adversarial = torch.maximum(torch.minimum(adversarial, inputs + radius), inputs - radius)
        else:
            delta = adversarial - inputs
            adversarial = torch.addcmul(inputs, delta, (radius / l2_norms(delta).clamp_min(1e-12)).clamp(max=1.0))
        return self.project(adversarial, inputs)

    def random_point(self, inputs, radius, mask=None, keys=None, restart=0):
        """A uniform point of the Linf ball, or a point of the L2 ball at a uniform radius (CPU generators).

        ``keys``: see ``random_rows``; ``restart`` picks each utterance's stream.
        """
        draw = dict(generator=self.generator, keys=keys, seed=self.seed, stream=restart)
        if self.norm == "linf":
            noise = random_rows(inputs.shape, **draw) * 2 - 1
        else:
            direction, scale = random_rows([inputs.shape, inputs.shape[:1]], draw=[torch.randn, torch.rand], **draw)
            noise = direction / l2_norms(direction).clamp_min(1e-12) * scale.view(-1, *[1] * (inputs.dim() - 1))
        noise = noise.to(device=inputs.device, dtype=inputs.dtype)
        return self.project_ball(inputs + radius * noise, inputs, radius, mask)

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, keys=None):
        """Adversarial inputs within ``eps`` (the attack's own if None).

        ``gradient``, the input gradient of the attack's loss at ``inputs``,
        replaces the first step's gradient when the attack starts from the
        inputs (no random start); it is ignored otherwise. ``keys`` (one per
        utterance) make each utterance's random starts its own (see ``random_rows``).
        """
        radius = self.radius(inputs, self.eps if eps is None else eps)
        return self.attack(model, inputs.detach(), targets, radius, loss_scale, gradient, keys=keys)

    def attack(self, model, inputs, targets, radius, loss_scale=1.0, gradient=None, mask=None, keys=None):
        """PGD with restarts within per-utterance ``radius``; the worst restart per utterance.

        ``mask``: see ``project_ball`` (None: no padding); ``keys``: see ``perturb``.
        """
        step = radius * self.rel_step_size
        first_gradient = gradient if self.uses_given_gradient else None
        with self.generation_mode(model):
            # From the clean input, the first gradient pass finds the labels; otherwise they are found first.
            labels = None if self.start_is_clean(first_gradient) else self.clean_labels(model, inputs, targets)
            start = self.random_point(inputs, radius, mask, keys) if self.random_start else inputs
            best, labels = self.descend(
                model, inputs, start, targets, labels, radius, step, loss_scale, first_gradient, mask
            )
            if self.restarts > 1:
                best_loss, best_success = self.score(model, best, labels)
            for restart in range(1, self.restarts):
                # Drawn for the whole batch, so that an utterance's start does not depend on the others' results.
                start = self.random_point(inputs, radius, mask, keys, restart)
                todo = (~best_success).nonzero().view(-1)
                if len(todo) == 0:
                    continue
                candidate, _ = self.descend(
                    model,
                    inputs[todo],
                    start[todo],
                    None,
                    labels[todo],
                    rows(radius, todo),
                    rows(step, todo),
                    loss_scale,
                    None,
                    rows(mask, todo),
                )
                loss, success = self.score(model, candidate, labels[todo])
                keep = success | (loss > best_loss[todo])
                better = todo[keep]
                best[better], best_loss[better], best_success[better] = candidate[keep], loss[keep], success[keep]
        return best.detach()

    def start_is_clean(self, first_gradient):
        """Whether the first gradient is taken at the clean inputs by the attack itself."""
        return not self.random_start and first_gradient is None

    def clean_labels(self, model, inputs, targets):
        """The attack's labels at the clean inputs, without a gradient (when the caller gave one)."""
        if not self.targeted and self.label_source == "target":
            return self.labels(None, targets)  # no pass needed: the targets, or the error naming them missing
        with torch.no_grad():
            logits, _ = model(inputs)
        return self.labels(logits, targets)

    def descend(self, model, inputs, start, targets, labels, radius, step, loss_scale, first_gradient, mask=None):
        """``steps`` projected steps from ``start``; returns the end point and the labels attacked."""
        if self.stop_when_fooled:
            return self.descend_until_fooled(model, inputs, start, targets, labels, radius, step, loss_scale, mask)
        adversarial = start
        for index in range(self.steps):
            if index == 0 and first_gradient is not None:
                grad = first_gradient
            else:
                grad, labels = self.gradient_in_mode(model, adversarial, targets, labels, loss_scale)
            if mask is not None:
                grad = grad * mask  # the L2 direction is that of the real samples' gradient
            adversarial = self.project_ball(self.ascend(adversarial.detach(), grad, step), inputs, radius, mask)
        return adversarial.detach(), labels

    def descend_until_fooled(self, model, inputs, start, targets, labels, radius, step, loss_scale, mask=None):
        """``descend``, where an utterance whose iterate succeeds (seen in the gradient pass at it) keeps that
        iterate and takes no more steps. Rows do not interact (eval mode), so an utterance never fooled on
        the way ends where ``descend`` would have taken it."""
        adversarial = start.detach().clone()
        active = torch.arange(len(start), device=start.device)
        for _ in range(self.steps):
            current = adversarial[active].requires_grad_(True)
            logits, _ = model(current)
            if labels is None:
                labels = self.labels(logits, targets)
            grad = self.gradient_from_logits(logits, current, labels[active], loss_scale)
            going = ~self.succeeded(logits.detach(), labels[active])
            active, current, grad = active[going], current[going], grad[going]
            if len(active) == 0:
                break
            active_mask = rows(mask, active)
            if active_mask is not None:
                grad = grad * active_mask
            stepped = self.ascend(current.detach(), grad, rows(step, active))
            adversarial[active] = self.project_ball(stepped, inputs[active], rows(radius, active), active_mask)
        return adversarial, labels

    def score(self, model, adversarial, labels):
        """Per-utterance loss and success at an end point (one forward without autograd)."""
        with torch.no_grad():
            logits, _ = model(adversarial)
        return self.loss(logits, labels), self.succeeded(logits, labels)
