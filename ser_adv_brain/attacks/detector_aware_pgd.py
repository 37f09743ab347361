"""An adaptive attack on a classifier guarded by a fake-data detector (Carlini and Wagner, AISec 2017)."""

import torch

from ser_adv_brain.attacks.pgd import PGD
from ser_adv_brain.checks import check_non_negative
from ser_adv_brain.detectors import DetectedClassifier


class DetectorAwarePGD(PGD):
    """PGD on ``L(f(x'), y) - lambda * s(x')``: fool the classifier and look real to the detector.

    ``L`` is the attack's loss on the classifier (the cross-entropy of
    ``label_source``'s labels, negated when targeted), ``s`` the detector's
    logit of "fake" and ``lambda`` the ``detector_weight``. Carlini and
    Wagner, "Adversarial Examples Are Not Easily Detected: Bypassing Ten
    Detection Methods" (AISec 2017), show that detectors judged only on
    attacks that ignore them give a false sense of security; this is their
    white-box setting (attacker knows classifier and detector) with a PGD
    optimiser instead of theirs. With ``detector_weight=0`` it is PGD.

    ``model`` must be a ``DetectedClassifier``. A restart (``restarts > 1``)
    counts as a success when the classifier is fooled and the detector's
    logit is below 0.

    Arguments
    ---------
    detector_weight : float
        ``lambda`` (>= 0).
    eps, steps, rel_step_size, norm, random_start, restarts, seed, eta, label_source, model_mode, target_class,
    class_names :
        See ``PGD``.

    Example
    -------
    >>> from ser_adv_brain.detectors import EmbeddingDetector
    >>> from ser_adv_brain.models import CNN4
    >>> model = CNN4(base_channels=2)
    >>> guarded = DetectedClassifier(model, EmbeddingDetector(model.embedding_dim, hidden=4)).eval()
    >>> x = torch.randn(3, 20, 8)
    >>> x_adv = DetectorAwarePGD(eps=0.05, steps=2).perturb(guarded, x, targets=None)
    >>> bool(((x_adv - x).abs() <= 0.05 + 1e-6).all())
    True
    """

    def __init__(self, eps, detector_weight=1.0, steps=10, **kwargs):
        super().__init__(eps, steps=steps, **kwargs)
        check_non_negative(detector_weight=detector_weight)
        self.detector_weight = float(detector_weight)

    def __repr__(self):
        return f"{super().__repr__()[:-1]}, detector_weight={self.detector_weight})"

    @property
    def name(self):
        """``DetectorAwarePGD-10 (adaptive)``: the detector's report tells it from attacks that ignore the detector."""
        return f"{super().name} (adaptive)"

    @staticmethod
    def check_model(model):
        if not isinstance(model, DetectedClassifier):
            raise TypeError(
                f"DetectorAwarePGD attacks a classifier and its detector together: pass "
                f"DetectedClassifier(model, detector), not {type(model).__name__}."
            )

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None):
        """See ``PGD.perturb``; ``gradient`` is not used (the caller's would lack the detector's term)."""
        self.check_model(model)
        return super().perturb(model, inputs, targets, eps, loss_scale, gradient=None)

    @property
    def uses_given_gradient(self):
        return False

    def joint_loss(self, logits, detector_logit, labels):
        """Per utterance: ``L(f(x'), y) - lambda * s(x')``."""
        return self.loss(logits, labels) - self.detector_weight * detector_logit.float()

    def gradient_in_mode(self, model, inputs, targets, labels=None, loss_scale=1.0):
        """The input gradient of the joint loss, summed over the batch (model already in the attack's mode)."""
        inputs = inputs.detach().requires_grad_(True)
        logits, detector_logit = model(inputs)
        if labels is None:
            labels = self.labels(logits, targets)
        loss = self.joint_loss(logits, detector_logit, labels).sum() * loss_scale
        (grad,) = torch.autograd.grad(loss, inputs)
        return grad, labels

    def score(self, model, adversarial, labels):
        """Per utterance: the joint loss, and success (classifier fooled, detector logit below 0)."""
        with torch.no_grad():
            logits, detector_logit = model(adversarial)
        success = self.succeeded(logits, labels) & (detector_logit < 0)
        return self.joint_loss(logits, detector_logit, labels), success
