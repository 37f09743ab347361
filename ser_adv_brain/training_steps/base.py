"""The training-step contract, and the clean step: ``L(x)`` on the real batch."""

from ser_adv_brain.objectives.base import classification_loss


class TrainingStep:
    """What one training batch computes; see ``ser_adv_brain.training_steps`` for the rules.

    ``forward(brain, batch)`` returns the real batch's ``feats``, ``logits``
    and ``embedding``; ``loss(brain, predictions, batch)`` returns a dict with
    the ``loss`` the Brain backpropagates and, for the training log, its parts.
    ``at(optimizer_step)`` is the step to run at that point of training (a
    warm-up runs another); ``generators()`` the random generators of its own.
    A step with ``trains_on_noisy_copies_only`` has ``noisy_features``.
    """

    warmup_steps = 0  # optimizer steps of clean training first (``at`` runs a CleanStep until then)
    # Whether the model never sees a clean input (randomised smoothing's base classifier): its evaluations
    # then also score ``noisy_features(brain, batch)``, the inputs it is trained for.
    trains_on_noisy_copies_only = False

    def at(self, optimizer_step):
        return self

    def generators(self):
        """The ``torch.Generator``s the step draws from besides the global ones (a checkpoint saves their state)."""
        return []

    def forward(self, brain, batch):
        raise NotImplementedError

    def loss(self, brain, predictions, batch):
        raise NotImplementedError


class CleanStep(TrainingStep):
    """``L(x)``: the negative log-likelihood of the real batch, one forward through DDP.

    Example
    -------
    >>> CleanStep()
    CleanStep()
    """

    def __repr__(self):
        return "CleanStep()"

    def forward(self, brain, batch):
        feats = brain.compute_features(batch.sig.data)
        logits, embedding = brain.modules.model(feats)
        return {"feats": feats, "logits": logits, "embedding": embedding}

    def loss(self, brain, predictions, batch):
        return {"loss": classification_loss(predictions["logits"], brain.targets(batch))}
