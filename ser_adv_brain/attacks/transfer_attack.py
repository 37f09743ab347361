"""Transfer attack (black box): fake data made on a source model, scored on the attacked one (Papernot et al., 2016)."""

import os

import torch

from ser_adv_brain.attacks.base import Attack


class TransferAttack(Attack):
    """``x' = x + clip(N_t(N_s^-1(A_s(N_s(N_t^-1(x)))) ) - x, -eps, eps)``: a white-box attack on another model.

    ``A_s`` is a white-box feature attack run on the source model (a training
    output folder: its checkpoint ``select_checkpoint`` names, its own
    normaliser ``N_s``); ``N_t`` is the attacked model's normaliser. The fake
    data go from one model to the other as log-Mel features, as in
    ``ser-adv transfer``, and are clipped to the attacked
    model's Linf ball of radius ``eps`` (a no-op when both models share their
    normaliser statistics, as models trained on the same split do). The
    attacked model is never run, so it is a black box: the gradient-masking
    check "a transfer or query-only attack beats the white-box one" reads it.

    In the attack suite it belongs to the Linf feature threat model, so robust
    UAR counts it. The source folder must share the feature settings and hold
    the utterances' labels (true labels are attacked on the source). It
    declares ``needs_source_model``: whoever runs it first gives it the
    source folder's restored model (``attach_source``; the end-of-run reports
    and ``ser-adv evaluate`` load it as a ``ser_adv_brain.runs.TrainedModel``)
    and the attacked model's normaliser (``set_target_normalizer``; the suite does).

    Arguments
    ---------
    source : str
        A training output folder (with ``hyperparams.yaml`` and ``save/``).
    attack : Attack
        The white-box attack run on the source (Linf on the features; its eps
        is replaced by the suite's budget; its ``label_source`` says which
        labels it attacks: ``target`` for the true ones).

    Example (yaml, appended to ``attack_suite``)::

        - !new:ser_adv_brain.attacks.TransferAttack
            source: results/EmoDB/cnn4_single/final
            attack: !new:ser_adv_brain.attacks.PGD {eps: 0.02, steps: 10, eta: null, label_source: target}
    """

    domain = "features"
    norm = "linf"
    black_box = True  # it never queries the attacked model
    needs_source_model = True

    def __init__(self, source, attack):
        if not os.path.isfile(os.path.join(source, "hyperparams.yaml")):
            raise ValueError(f"TransferAttack source {source!r} is not a training output folder: no hyperparams.yaml.")
        if not isinstance(attack, Attack) or attack.threat_model != "features_linf" or attack.black_box:
            raise ValueError(f"TransferAttack attack must be a white-box Linf feature attack, got {attack!r}")
        super().__init__(attack.eps, eta=None, label_source=attack.label_source)
        self.source, self.source_attack = source, attack
        self.source_model = None  # attached by whoever runs the attack: a yaml that names it need not load a model
        self.target_normalizer = None

    def __repr__(self):
        return f"TransferAttack(source={self.source!r}, attack={self.source_attack!r})"

    @property
    def name(self):
        """``Transfer PGD-10``: named for the attack it runs on its source."""
        return f"Transfer {self.source_attack.name}"

    def set_class_names(self, class_names):
        """Gives the label set to the source attack too (a targeted one names its emotion)."""
        self.source_attack.set_class_names(class_names)
        return super().set_class_names(class_names)

    def set_target_normalizer(self, normalizer):
        """The attacked model's feature normaliser (the suite gives it): inputs arrive z-scored by it."""
        self.target_normalizer = normalizer
        return self

    def attach_source(self, source_model):
        """The source folder's restored model: ``model`` and ``normalizer`` (a ``ser_adv_brain.runs.TrainedModel``)."""
        self.source_model = source_model
        return self

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, keys=None):
        """The source attack's fake data for ``inputs``, moved into the attacked model's ball (``model`` is unused)."""
        if self.target_normalizer is None:
            raise ValueError("TransferAttack needs the attacked model's normaliser: call set_target_normalizer first.")
        eps = self.eps if eps is None else eps
        self.check_budget(eps)
        source = self.source_model
        if source is None:
            raise ValueError(
                f"TransferAttack needs its source model: call attach_source with {self.source!r} restored."
            )
        target_norm, source_norm = self.target_normalizer, source.normalizer
        with torch.no_grad():
            log_mel = inputs * target_norm.std + target_norm.mean
        fake = self.source_attack.perturb(source.model, source_norm(log_mel), targets, eps=eps, keys=keys)
        with torch.no_grad():
            moved = target_norm(fake * source_norm.std + source_norm.mean)
            return inputs + (moved - inputs).clamp(-eps, eps)
