"""Unweighted average recall (UAR) and the confusion matrix it comes from; epoch means of training losses."""

import csv

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import ddp_all_reduce


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

    Example
    -------
    >>> unweighted_average_recall([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    0.625
    """
    recall = per_class_recall(confusion)
    present = ~recall.isnan()
    if not present.any():
        return float("nan")
    return float(recall[present].mean())


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
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *labels, "support", "recall"])
            for i, label in enumerate(labels):
                row = self.counts[i].tolist()
                writer.writerow([label, *row, sum(row), f"{float(recall[i]):.4f}"])
            writer.writerow(["UAR", *[""] * len(labels), int(self.counts.sum()), f"{self.uar():.4f}"])


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
