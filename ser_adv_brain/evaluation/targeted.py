"""The emotion-to-emotion success matrix of a targeted attack: which emotion can be forced into which."""

import torch

from ser_adv_brain.attacks.base import predict


def targeted_success_matrix(attack, model, batches, n_classes):
    """``rates[i, j]``: the share of utterances of true emotion ``i`` that the model calls ``j``
    once ``attack`` is aimed at ``j``.

    Every utterance is attacked once per class (``attack.targeted_at(j)``),
    and the fake data are scored as an evaluation does (eval mode). The
    diagonal is the share that, aimed at its own emotion, stays recognised.

    Arguments
    ---------
    attack : GradientAttack
        FGSM or PGD; its own ``target_class`` is replaced by each class in turn.
    model : torch.nn.Module
        Features -> ``(logits, embedding)``.
    batches : iterable of (torch.Tensor, torch.Tensor)
        ``(inputs, true class indices)``.
    n_classes : int

    Returns
    -------
    torch.Tensor
        ``[n_classes, n_classes]`` float64 rates (rows: true emotion; columns:
        target); NaN rows for emotions absent from the data.

    Example
    -------
    >>> from ser_adv_brain.attacks import FGSM
    >>> from ser_adv_brain.models import CNN4
    >>> model = CNN4(n_classes=3, base_channels=2).eval()
    >>> batches = [(torch.randn(4, 20, 8), torch.tensor([0, 1, 2, 0]))]
    >>> targeted_success_matrix(FGSM(eps=0.1), model, batches, 3).shape
    torch.Size([3, 3])
    """
    hits = torch.zeros(n_classes, n_classes, dtype=torch.float64)
    support = torch.zeros(n_classes, dtype=torch.float64)
    aimed = [attack.targeted_at(target) for target in range(n_classes)]
    for inputs, labels in batches:
        labels = labels.view(-1)
        support += torch.bincount(labels.cpu(), minlength=n_classes)
        for target, targeted in enumerate(aimed):
            forced = (predict(model, targeted.perturb(model, inputs, labels)) == target).cpu().double()
            hits[:, target] += torch.zeros(n_classes, dtype=torch.float64).index_add_(0, labels.cpu(), forced)
    return hits / support.unsqueeze(1)
