"""What every gradient-sign attack shares: the label to attack, the model's mode, the budget.

Attacks work on the model's input, the normalised log-Mel features (or, for
waveform attacks, the samples). Nothing is clamped to [0, 1]: z-scored
features take any value.
"""

import contextlib

import torch
import torch.nn.functional as F

LABEL_SOURCES = ("predicted", "target")
MODEL_MODES = ("eval", "train")


def check_non_negative(**values):
    """Raises a ``ValueError`` naming the first argument that is negative or not finite."""
    for name, value in values.items():
        if value is not None and not (0.0 <= float(value) < float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@contextlib.contextmanager
def batchnorm_stats_preserved(model):
    """Restores every BatchNorm running statistic on exit: generation passes must not train BN."""
    saved = [
        (buffer, buffer.clone())
        for module in model.modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        for buffer in module.buffers()
    ]
    try:
        yield
    finally:
        # Through .data: a tracked in-place copy would bump the buffers' version
        # and break the backward of a training forward that saved them.
        for buffer, value in saved:
            buffer.data.copy_(value)


class GradientAttack:
    """Base class of attacks that follow the sign of the loss gradient w.r.t. the input.

    Arguments
    ---------
    eps : float
        Step size of the attack (the FGSM epsilon).
    eta : float or None
        The perturbation is clipped to ``[x - eta, x + eta]``; ``None`` disables the clip.
    label_source : str
        ``"predicted"``: attack the model's own prediction (the authors' code;
        avoids label leaking). ``"target"``: attack the true label (the paper's formula).
    model_mode : str
        Mode of the model while the attack computes its gradient: ``"eval"``
        (the authors' code: batch norm uses running statistics) or ``"train"``.
        Either way the model's mode and its batch-norm statistics come back unchanged.
    """

    def __init__(self, eps, eta=0.1, label_source="predicted", model_mode="eval"):
        check_non_negative(eps=eps, eta=eta)
        if label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
        if model_mode not in MODEL_MODES:
            raise ValueError(f"model_mode must be one of {MODEL_MODES}, got {model_mode!r}")
        self.eps = float(eps)
        self.eta = None if eta is None else float(eta)
        self.label_source = label_source
        self.model_mode = model_mode

    def __repr__(self):
        return (
            f"{type(self).__name__}(eps={self.eps}, eta={self.eta}, "
            f"label_source={self.label_source!r}, model_mode={self.model_mode!r})"
        )

    def labels(self, logits, targets):
        """The labels whose loss the attack increases."""
        if self.label_source == "predicted":
            return logits.detach().argmax(dim=-1)
        return targets

    def gradient_from_logits(self, logits, inputs, labels, loss_scale=1.0, retain_graph=False):
        """``grad_inputs`` of the cross-entropy, for logits already computed from ``inputs``.

        ``loss_scale`` multiplies the loss first, as a GradScaler does, so that
        fp16 gradients keep their sign instead of underflowing to zero.
        """
        loss = F.cross_entropy(logits.float(), labels, reduction="sum") * loss_scale
        (grad,) = torch.autograd.grad(loss, inputs, retain_graph=retain_graph)
        return grad

    @contextlib.contextmanager
    def generation_mode(self, model):
        """Puts the model in the attack's mode, and puts everything back afterwards."""
        was_training = model.training
        train = self.model_mode == "train"
        model.train(train)
        # Only a train-mode pass updates BN statistics, so only it needs guarding.
        guard = batchnorm_stats_preserved(model) if train else contextlib.nullcontext()
        try:
            with guard, torch.enable_grad():
                yield
        finally:
            model.train(was_training)

    def input_gradient(self, model, inputs, targets, labels=None, loss_scale=1.0):
        """One forward and input-only backward pass in the attack's mode.

        Returns the gradient and the labels it was taken for, so that
        iterative attacks keep attacking the same (first) prediction.
        Parameter gradients are neither computed nor touched.
        """
        inputs = inputs.detach().requires_grad_(True)
        with self.generation_mode(model):
            logits, _ = model(inputs)
            if labels is None:
                labels = self.labels(logits, targets)
            grad = self.gradient_from_logits(logits, inputs, labels, loss_scale)
        return grad, labels

    def project(self, adversarial, inputs):
        """Clips the perturbation to the eta-ball around the inputs."""
        if self.eta is None:
            return adversarial
        return torch.maximum(torch.minimum(adversarial, inputs + self.eta), inputs - self.eta)

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None):
        """Returns adversarial inputs.

        ``eps`` overrides the attack's own budget; ``gradient``, if given, is
        the input gradient at ``inputs`` for the attack's labels, already
        computed by the caller (the training step gets it for free).
        """
        raise NotImplementedError

    def curve(self, model, inputs, targets, eps_grid, loss_scale=1.0):
        """Yields ``(eps, adversarial inputs)`` for each budget of a robustness curve."""
        for eps in eps_grid:
            yield eps, self.perturb(model, inputs, targets, eps=eps, loss_scale=loss_scale)
