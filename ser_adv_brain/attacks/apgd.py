"""Auto-PGD (Croce and Hein, ICML 2020): PGD that sets its own step size, on the cross-entropy or the DLR loss."""

import torch

from ser_adv_brain.attacks.dlr import check_classes, dlr_loss, targeted_dlr_loss
from ser_adv_brain.attacks.pgd import PGD, rows
from ser_adv_brain.checks import check_choice, check_non_negative, check_positive_int

APGD_LOSSES = ("ce", "dlr")
MOMENTUM = 0.75  # weight of the new step against the last one
RISING_SHARE = 0.75  # rho: the step size halves where at most this share of the steps since raised the loss


def checkpoint_iterations(steps):
    """The iteration counts after which APGD may halve its step size.

    The first after ``0.22 N`` iterations, then gaps each ``0.03 N`` shorter,
    never below ``0.06 N`` (AutoAttack's code: ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``).

    Example
    -------
    >>> checkpoint_iterations(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    gap, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, at = [], gap
    while at <= steps:
        marks.append(at)
        gap = max(gap - shrink, shortest)
        at += gap
    return marks


def halving(losses, halved_last, last_best, best_loss):
    """Per utterance, whether APGD halves its step size at a checkpoint.

    ``losses``: ``[k + 1, batch]``, the loss at the last checkpoint and after each of the ``k`` steps since.
    Halved where at most ``RISING_SHARE k`` of those steps raised the loss (AutoAttack's code counts with
    ``<=``; the paper writes fewer than), or where the step size was not halved at the last checkpoint
    (``halved_last``) and the best loss has not risen since (``last_best >= best_loss``).
    """
    rising = (losses[1:] > losses[:-1]).sum(dim=0)
    return (rising <= RISING_SHARE * (len(losses) - 1)) | (~halved_last & (last_best >= best_loss))


class APGD(PGD):
    """Auto-PGD: ``z = P(x_t + eta_t d(grad))``, ``x_{t+1} = P(x_t + 0.75 (z - x_t) + 0.25 (x_t - x_{t-1}))``.

    ``P`` and ``d`` are PGD's (the ball of ``norm`` around the clean input,
    then the ``eta`` clip; ``sign`` for Linf, ``g / |g|_2`` for L2); the first
    step takes no momentum. The step size ``eta_t`` starts at ``2 eps`` and is
    halved, per utterance, at each of ``checkpoint_iterations(steps)`` where
    at most 75% of the steps since the last checkpoint raised the loss, or
    where the step size was not halved at the last checkpoint and the best loss
    has not risen since; the iterate then restarts from the best point so far.
    Every iterate that fools the model is kept: the attack returns, per
    utterance, the last iterate that fooled it, else the one with the highest loss.

    The loss (``loss``): ``"ce"``, the cross-entropy of the label attacked
    (APGD-CE); ``"dlr"``, the DLR loss (``attacks.dlr``), and with ``targets``
    > 0 the targeted DLR towards each of the ``min(targets, C - 1)`` most likely
    other classes at the clean input in turn (APGD-T: each utterance still
    correct after one target is attacked towards the next). Success is always
    leaving the label attacked. ``eot_iter`` > 1 averages each gradient over as
    many forward passes, for models whose forward pass is random (expectation
    over transformation, AutoAttack's ``rand`` version).

    Arguments
    ---------
    eps : float
        Radius of the ball (see ``norm``).
    steps : int
        Iterations per restart (100 in AutoAttack).
    loss : str
        ``"ce"`` or ``"dlr"``.
    targets : int
        0: untargeted. Otherwise the number of target classes of APGD-T (``loss="dlr"``; 9 in AutoAttack).
    eot_iter : int
        Forward passes averaged per gradient.
    norm, random_start, restarts, seed, stop_when_fooled, eta, label_source, model_mode, class_names :
        See ``PGD`` (``rel_step_size`` and ``target_class`` do not apply: the step size is the attack's
        own, and the targets are the model's most likely other classes).

    Example
    -------
    >>> from ser_adv_brain.models import CNN4
    >>> model, x = CNN4(base_channels=2).eval(), torch.randn(3, 20, 8)
    >>> x_adv = APGD(eps=0.05, steps=5, loss="dlr", targets=2).perturb(model, x, targets=None)
    >>> bool(((x_adv - x).abs() <= 0.05 + 1e-6).all())
    True
    """

    def __init__(
        self,
        eps,
        steps=100,
        loss="ce",
        targets=0,
        eot_iter=1,
        norm="linf",
        random_start=True,
        restarts=1,
        seed=0,
        stop_when_fooled=False,
        eta=0.1,
        label_source="predicted",
        model_mode="eval",
        class_names=None,
    ):
        check_choice("loss", loss, APGD_LOSSES)
        check_non_negative(targets=targets)
        check_positive_int(eot_iter=eot_iter)
        if targets and loss != "dlr":
            raise ValueError(f"targets={targets} needs loss='dlr': APGD-T attacks the targeted DLR loss.")
        self.loss_name, self.targets, self.eot_iter = loss, int(targets), eot_iter
        super().__init__(
            eps=eps,
            steps=steps,
            rel_step_size=2.0,
            norm=norm,
            random_start=random_start,
            restarts=restarts,
            seed=seed,
            stop_when_fooled=stop_when_fooled,
            eta=eta,
            label_source=label_source,
            model_mode=model_mode,
            class_names=class_names,
        )

    def __repr__(self):
        head = super().__repr__()[: -len(")")].replace(f", rel_step_size={self.rel_step_size}", "")
        return f"{head}, loss={self.loss_name!r}, targets={self.targets}, eot_iter={self.eot_iter})"

    def set_class_names(self, class_names):
        """Gives the label set (see ``Attack``); refuses one too small for the DLR loss, before any run."""
        super().set_class_names(class_names)
        if self.loss_name == "dlr":
            # By name: the base class gives the label set before PGD has set what the full repr shows.
            check_classes(len(self.class_names), self.targets > 0, self.name)
        return self

    @property
    def uses_given_gradient(self):
        return False  # every pass starts where the attack chooses, and takes its own gradients

    @property
    def name(self):
        """``APGD-CE``, ``APGD-DLR`` or ``APGD-T`` (AutoAttack's names), after the class (``WaveformAPGD-CE``)."""
        loss = "T" if self.targets else self.loss_name.upper()
        return f"{type(self).__name__}-{loss}"

    def apgd_loss(self, logits, labels, aimed=None):
        """Per-utterance loss to raise: the cross-entropy, the DLR loss, or the targeted DLR towards ``aimed``."""
        if self.loss_name == "ce":
            return self.loss(logits, labels)
        return dlr_loss(logits, labels) if aimed is None else targeted_dlr_loss(logits, labels, aimed)

    def gradient(self, model, inputs, labels, aimed, loss_scale):
        """The loss gradient at ``inputs``, averaged over ``eot_iter`` passes; with the last pass's logits and loss."""
        total = None
        for _ in range(self.eot_iter):
            current = inputs.detach().requires_grad_(True)
            logits, _ = model(current)
            loss = self.apgd_loss(logits, labels, aimed)
            (grad,) = torch.autograd.grad(loss.sum() * loss_scale, current)
            # Autograd may return a broadcast view (a model that sums over frames first); the sum here and the
            # attack's restarts from its best point write into the gradient.
            total = grad.contiguous() if total is None else total.add_(grad)
        return total if self.eot_iter == 1 else total / self.eot_iter, logits.detach(), loss.detach()

    def attack(self, model, inputs, targets, radius, loss_scale=1.0, gradient=None, mask=None, keys=None):
        """APGD's passes (one per target class with ``targets``, each with its restarts) on what is still correct.

        ``gradient`` is not used (see ``uses_given_gradient``); the others are ``PGD.attack``'s.
        """
        with self.generation_mode(model):
            with torch.no_grad():
                clean_logits, _ = model(inputs)
            labels = self.labels(clean_logits, targets)
            n_classes = clean_logits.shape[-1]
            if self.loss_name == "dlr":
                check_classes(n_classes, self.targets > 0, self.name)
            ranks = [None] if not self.targets else list(range(1, min(self.targets, n_classes - 1) + 1))
            best, fooled = inputs.clone(), self.succeeded(clean_logits, labels)
            first = True
            for index, rank in enumerate(ranks):
                for restart in range(self.restarts):
                    todo = (~fooled).nonzero().view(-1)
                    if len(todo) == 0:
                        return best.detach()
                    aimed = None if rank is None else clean_logits[todo].argsort(dim=-1, descending=True)[:, rank]
                    stream = index * self.restarts + restart
                    start = (
                        self.random_point(inputs, radius, mask, keys, stream)[todo]
                        if self.random_start
                        else inputs[todo]
                    )
                    found, succeeded = self.run_pass(
                        model,
                        inputs[todo],
                        start,
                        labels[todo],
                        aimed,
                        rows(radius, todo),
                        rows(mask, todo),
                        loss_scale,
                    )
                    # A pass's highest-loss points stand until a later one fools; losses of passes are not comparable.
                    keep = torch.ones_like(succeeded) if first else succeeded
                    best[todo[keep]], fooled[todo[succeeded]], first = found[keep], True, False
        return best.detach()

    def run_pass(self, model, inputs, start, labels, aimed, radius, mask, loss_scale):
        """One APGD run from ``start``: per utterance the last iterate that fooled it, else the highest-loss
        one, and whether it was fooled."""
        n, per_utterance = len(inputs), (len(inputs),) + (1,) * (inputs.dim() - 1)
        step = 2.0 * radius * torch.ones(per_utterance, dtype=inputs.dtype, device=inputs.device)
        adversarial, previous = start.detach().clone(), start.detach().clone()
        grad, logits, loss = self.gradient(model, adversarial, labels, aimed, loss_scale)
        fooled = self.succeeded_as_scored(model, adversarial, inputs, self.succeeded(logits, labels), labels)
        found, best, best_loss, best_grad = adversarial.clone(), adversarial.clone(), loss.clone(), grad.clone()
        history = [loss]  # per iteration, every utterance's loss (the start's first)
        last_best, halved_last = best_loss.clone(), torch.ones(n, dtype=torch.bool, device=inputs.device)
        marks, since = checkpoint_iterations(self.steps), 0
        # The utterances still stepping; None: all of them, without copies through an index (which would cost
        # an iteration as much as the step's own elementwise work: bench/attack_cost.py).
        active = None
        for iteration in range(self.steps):
            if self.stop_when_fooled:
                going = (~fooled).nonzero().view(-1)
                if len(going) == 0:
                    break
                active = None if len(going) == n else going
            x, x0, prev = take(adversarial, active), take(inputs, active), take(previous, active)
            r, m = take(radius, active), take(mask, active)
            momentum = MOMENTUM if iteration > 0 else 1.0
            z = self.project_ball(self.ascend(x, take(grad, active), take(step, active)), x0, r, m)
            # x + momentum (z - x) + (1 - momentum) (x - x_{t-1})
            moved = self.project_ball(torch.lerp(x, z, momentum).add_(x - prev, alpha=1 - momentum), x0, r, m)
            grad_now, logits, loss_now = self.gradient(
                model, moved, take(labels, active), take(aimed, active), loss_scale
            )
            previous, adversarial = put(previous, active, x), put(adversarial, active, moved)
            grad = put(grad, active, grad_now)
            now = self.succeeded_as_scored(
                model, moved, x0, self.succeeded(logits, take(labels, active)), take(labels, active)
            )
            stepped = torch.arange(n, device=inputs.device) if active is None else active
            found[stepped[now]], fooled[stepped[now]] = moved[now], True
            loss = put(history[-1].clone(), active, loss_now)
            history.append(loss)
            better = stepped[loss_now > take(best_loss, active)]
            best[better], best_loss[better], best_grad[better] = adversarial[better], loss[better], grad[better]
            since += 1
            if iteration + 1 in marks:
                halve = halving(torch.stack(history[-since - 1 :]), halved_last, last_best, best_loss)
                step[halve] /= 2
                adversarial[halve], grad[halve] = best[halve], best_grad[halve]
                halved_last, last_best, since = halve, best_loss.clone(), 0
        return torch.where(fooled.view(per_utterance), found, best), fooled


def take(value, active):
    """The active utterances' rows of a per-utterance value (all of it with ``active`` None; scalars as they are)."""
    return value if active is None else rows(value, active)


def put(target, active, value):
    """``target`` with the active utterances' rows set to ``value``: ``value`` itself when all are active."""
    if active is None:
        return value
    target[active] = value
    return target
