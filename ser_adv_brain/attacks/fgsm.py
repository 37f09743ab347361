"""Fast Gradient Sign Method on the model input (Goodfellow et al., 2015; Ren et al., 2020)."""

from ser_adv_brain.attacks.base import GradientAttack
from ser_adv_brain.checks import check_non_negative


class FGSM(GradientAttack):
    """``x' = clip(x + eps * sign(grad_x L(w, x, y)), x - eta, x + eta)``.

    Targeted (``target_class`` set), the step goes down the cross-entropy of
    the target class t instead: ``x' = clip(x - eps * sign(grad_x L(w, x, t)), ...)``.
    See ``GradientAttack`` for the arguments (eps, eta, label_source,
    model_mode, target_class, class_names).

    Example
    -------
    >>> import torch
    >>> from ser_adv_brain.models import CNN4
    >>> _ = torch.manual_seed(0)
    >>> model, x = CNN4(base_channels=2), torch.randn(3, 20, 8)
    >>> attack = FGSM(eps=0.02)
    >>> x_adv = attack.perturb(model, x, targets=None)
    >>> bool(torch.allclose((x_adv - x).abs(), torch.full_like(x, 0.02)))  # every feature moves by eps
    True
    """

    domain = "features"
    norm = "linf"

    def step(self, inputs, grad, eps=None):
        """The FGSM update for a given input gradient (the direction does not depend on eps)."""
        eps = self.eps if eps is None else eps
        check_non_negative(eps=eps)
        return self.project(inputs + eps * grad.sign(), inputs).detach()

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, keys=None):
        """One gradient (unless given), one signed step (no random draws: ``keys`` do not matter)."""
        if gradient is None:
            gradient, _ = self.input_gradient(model, inputs, targets, loss_scale=loss_scale)
        return self.step(inputs, gradient, eps)

    def curve(self, model, inputs, targets, eps_grid, loss_scale=1.0):
        """All budgets from one input gradient, since FGSM's direction is eps-free."""
        grad, _ = self.input_gradient(model, inputs, targets, loss_scale=loss_scale)
        for eps in eps_grid:
            yield eps, self.step(inputs, grad, eps)
