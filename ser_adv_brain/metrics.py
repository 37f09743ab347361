"""Unweighted average recall (UAR) and the confusion matrix it comes from; epoch means of training losses; ROC AUC
and TPR at a false-positive rate, for detectors."""

from fractions import Fraction

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import ddp_all_reduce

from ser_adv_brain.tables import write_csv


def per_class_recall(confusion):
    """Recall of each class from a ``[true, predicted]`` count matrix; NaN where a class never occurs."""
    confusion = torch.as_tensor(confusion, dtype=torch.float64)
    support = confusion.sum(dim=1)
    recall = confusion.diagonal() / support
    recall[support == 0] = float("nan")
    return recall


def unweighted_average_recall(confusion):
    """UAR: the mean of per-class recalls.

    A class absent from the ground truth has no recall, so it is left out of
    the mean (as scikit-learn's ``balanced_accuracy_score`` does) instead of
    counting as 0 or 1. Predictions of such a class still lower the recall of
    the class they were made for. Returns NaN when no class occurs at all.

    The mean is exact (rational recalls, rounded once): equal UARs are equal floats whatever the order of the
    classes or the host's kernels. A float mean is decided in its last bit by the order it sums in, and best-dev
    checkpoint selection compares dev UARs: SpeechBrain keeps the later of two equal ones, and of two "equal" float
    means the one a bit above.

    Example
    -------
    >>> unweighted_average_recall([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    0.625
    """
    rows = torch.as_tensor(confusion).tolist()
    recalls = [Fraction(row[i]) / sum(map(Fraction, row)) for i, row in enumerate(rows) if sum(row)]
    if not recalls:
        return float("nan")
    return float(sum(recalls) / len(recalls))


class ConfusionMatrix:
    """Accumulates a ``[true, predicted]`` count matrix over batches (and over DDP ranks).

    Arguments
    ---------
    n_classes : int
    """

    def __init__(self, n_classes):
        self.counts = torch.zeros(n_classes, n_classes, dtype=torch.long)

    def append(self, predictions, targets):
        """Adds a batch of predicted and true class indices."""
        n = self.counts.shape[0]
        flat = targets.detach().long().cpu() * n + predictions.detach().long().cpu()
        self.counts += torch.bincount(flat, minlength=n * n).view(n, n)

    def all_reduce(self, device="cpu"):
        """Sums the counts of all DDP ranks into every rank (no-op outside DDP).

        ``device`` is where the collective runs: NCCL reduces CUDA tensors only.
        """
        counts = ddp_all_reduce(self.counts.to(device), torch.distributed.ReduceOp.SUM)
        self.counts = counts.cpu()

    def uar(self):
        return unweighted_average_recall(self.counts)

    def accuracy(self):
        total = int(self.counts.sum())
        return float(self.counts.diagonal().sum()) / total if total else float("nan")

    def write(self, path, labels):
        """Writes per-class recall and the confusion matrix as CSV (rows: true class)."""
        recall = per_class_recall(self.counts)
        header = ["true \\ predicted", *labels, "support", "recall"]
        rows = [
            [label, *self.counts[i].tolist(), int(self.counts[i].sum()), f"{float(recall[i]):.4f}"]
            for i, label in enumerate(labels)
        ]
        rows.append(["UAR", *[""] * len(labels), int(self.counts.sum()), f"{self.uar():.4f}"])
        write_csv(path, [dict(zip(header, row)) for row in rows], header)


def uar_of_correct(correct, targets, n_classes):
    """UAR of a per-utterance correct/incorrect vector: the mean over present classes of the correct share.

    Example
    -------
    >>> uar_of_correct(torch.tensor([True, False, True, True]), torch.tensor([0, 0, 1, 1]), 3)
    0.75
    """
    # Only the diagonal matters for UAR: a wrong utterance is booked under the next class.
    confusion = ConfusionMatrix(n_classes)
    confusion.append(torch.where(correct, targets, (targets + 1) % n_classes), targets)
    return confusion.uar()


@register_checkpoint_hooks
class RunningMeans:
    """Means of named scalars over an epoch (the parts of a training loss), checkpointable.

    As a checkpoint recoverable it carries the sums of an interrupted epoch
    over to the resumed run, which then logs the means an uninterrupted
    run would have logged.

    Example
    -------
    >>> means = RunningMeans()
    >>> means.append({"real_loss": 1.0}); means.append({"real_loss": torch.tensor(2.0)})
    >>> means.summarize()
    {'real_loss': 1.5}
    >>> means.summarize()
    {}
    """

    def __init__(self):
        self.sums, self.count = {}, 0

    def append(self, values):
        """Adds one step's values (floats or one-element tensors).

        Tensors are summed where they are: a ``float()`` per step would stall
        a GPU in the middle of every training step.
        """
        for name, value in values.items():
            value = value.detach().double() if torch.is_tensor(value) else float(value)
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def summarize(self):
        """The means since the last call (an empty dict if nothing was added); then starts afresh."""
        means = {name: float(total) / self.count for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means

    @mark_as_saver
    def save(self, path):
        sums = {name: float(total) for name, total in self.sums.items()}
        torch.save({"sums": sums, "count": self.count}, path)

    @mark_as_loader
    def load(self, path, end_of_epoch):
        del end_of_epoch  # an end-of-epoch checkpoint holds empty sums
        state = torch.load(path, weights_only=True)
        self.sums, self.count = dict(state["sums"]), int(state["count"])


# Detection metrics, written by hand: no dependency of the toolkit has ROC AUC (scikit-learn is not one).
def roc_auc(negatives, positives):
    """Area under the ROC curve of a detector: ``P(s+ > s-) + P(s+ = s-) / 2``.

    The Mann-Whitney statistic over every (positive, negative) pair of
    scores, ties counted half (Hanley and McNeil, Radiology 1982); 1 when
    every positive outscores every negative, 0.5 for chance. It builds the
    ``[positives, negatives]`` comparison matrix, fine for test sets of
    thousands of utterances.

    Example
    -------
    >>> roc_auc(torch.tensor([0.1, 0.4, 0.5]), torch.tensor([0.5, 0.8]))
    0.9166666666666666
    """
    negatives = torch.as_tensor(negatives, dtype=torch.float64).flatten()
    positives = torch.as_tensor(positives, dtype=torch.float64).flatten()
    if not len(negatives) or not len(positives):
        raise ValueError(f"roc_auc needs both classes, got {len(negatives)} negatives and {len(positives)} positives.")
    above = (positives[:, None] > negatives[None, :]).double()
    ties = (positives[:, None] == negatives[None, :]).double()
    return float((above + 0.5 * ties).mean())


def detection_threshold(negatives, false_positive_rate):
    """The lowest threshold ``t`` with at most ``false_positive_rate`` of ``negatives`` scoring above it.

    A score ``> t`` is flagged. ``t`` is the (m + 1)-th largest negative,
    ``m = floor(false_positive_rate * len(negatives))``, so ties at ``t`` are
    never flagged and the rate is never exceeded.

    Example
    -------
    >>> detection_threshold(torch.tensor([0.0, 1.0, 2.0, 3.0]), 0.25)
    2.0
    """
    negatives = torch.as_tensor(negatives, dtype=torch.float64).flatten()
    if not 0.0 <= false_positive_rate < 1.0:
        raise ValueError(f"false_positive_rate must be in [0, 1), got {false_positive_rate!r}")
    allowed = int(false_positive_rate * len(negatives) + 1e-9)  # floor, robust to 0.05 * 100 = 5.000000000000001
    return float(negatives.sort(descending=True).values[allowed])


def tpr_at_fpr(negatives, positives, false_positive_rate=0.05):
    """The true-positive rate at the ``detection_threshold`` of ``negatives`` (the ROC point at that rate).

    Example
    -------
    >>> tpr_at_fpr(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.5, 2.5, 3.5]), 0.25)
    0.6666666666666666
    """
    threshold = detection_threshold(negatives, false_positive_rate)
    return float((torch.as_tensor(positives, dtype=torch.float64) > threshold).double().mean())
