"""UAR (mean of per-class recall) and the confusion matrix, against hand-computed cases."""

import csv
import math
import random

import pytest
import torch

from ser_adv_brain.metrics import ConfusionMatrix, RunningMeans, per_class_recall, unweighted_average_recall


def test_perfect_and_chance():
    assert unweighted_average_recall(torch.eye(4) * 5) == 1.0
    assert unweighted_average_recall(torch.ones(4, 4)) == 0.25


def test_uar_is_not_accuracy_on_imbalanced_data():
    confusion = [[90, 10], [5, 5]]
    assert unweighted_average_recall(confusion) == pytest.approx((0.9 + 0.5) / 2)
    cm = ConfusionMatrix(2)
    cm.counts = torch.tensor(confusion)
    assert cm.accuracy() == pytest.approx(95 / 110)


def test_class_absent_from_the_ground_truth_is_left_out():
    # Class 2 never occurs; predicting it still costs class 1 its recall.
    confusion = [[3, 1, 0], [0, 2, 2], [0, 0, 0]]
    recall = per_class_recall(confusion)
    assert recall[:2].tolist() == [0.75, 0.5] and math.isnan(recall[2])
    assert unweighted_average_recall(confusion) == pytest.approx((0.75 + 0.5) / 2)


def test_no_data_gives_nan():
    assert math.isnan(unweighted_average_recall(torch.zeros(3, 3)))
    assert math.isnan(ConfusionMatrix(3).accuracy())


def test_confusion_matrix_accumulates_batches():
    cm = ConfusionMatrix(3)
    cm.append(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    cm.append(torch.tensor([2, 2]), torch.tensor([2, 0]))
    assert cm.counts.tolist() == [[1, 0, 1], [0, 1, 1], [0, 0, 1]]
    assert cm.uar() == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert cm.accuracy() == pytest.approx(3 / 5)
    cm.all_reduce()  # no-op outside DDP
    assert int(cm.counts.sum()) == 5


def test_uar_matches_a_plain_definition():
    rng = random.Random(0)
    for _ in range(200):
        # Few examples over 5 classes: some classes are often absent.
        pairs = [(rng.randrange(5), rng.randrange(5)) for _ in range(rng.randint(1, 12))]
        targets = [t for t, _ in pairs]
        cm = ConfusionMatrix(5)
        cm.append(torch.tensor([p for _, p in pairs]), torch.tensor(targets))
        recalls = [sum(t == p == c for t, p in pairs) / targets.count(c) for c in range(5) if c in targets]
        assert cm.uar() == pytest.approx(sum(recalls) / len(recalls)), pairs


def test_write_csv(tmp_path):
    cm = ConfusionMatrix(3)
    cm.append(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]))
    path = tmp_path / "confusion.csv"
    cm.write(str(path), ["anger", "fear", "joy"])
    rows = list(csv.reader(open(path, encoding="utf-8")))
    assert rows[0] == ["true \\ predicted", "anger", "fear", "joy", "support", "recall"]
    assert rows[1] == ["anger", "1", "0", "0", "1", "1.0000"]
    assert rows[2] == ["fear", "1", "1", "1", "3", "0.3333"]
    assert rows[3][:5] == ["joy", "0", "0", "0", "0"] and rows[3][5] == "nan"
    assert rows[4] == ["UAR", "", "", "", "4", f"{(1 + 1 / 3) / 2:.4f}"]


def test_uar_is_exact_so_equal_uars_are_equal_floats_whatever_the_recalls_and_the_order_of_the_classes():
    # Best-dev selection compares dev UARs: two epochs at 11/21 once differed in the last bit of a float mean.
    assert unweighted_average_recall([[1, 2], [2, 5]]) == unweighted_average_recall([[1, 6], [2, 19]]) == 11 / 21
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(2, 8, (1,), generator=generator))
        counts = torch.randint(0, 30, (n, n), generator=generator)
        order = torch.randperm(n, generator=generator)
        assert unweighted_average_recall(counts[order][:, order]) == unweighted_average_recall(counts), counts


def test_running_means_start_afresh_after_each_summary():
    means = RunningMeans()
    means.append({"loss": 4.0})
    assert means.summarize() == {"loss": 4.0}
    means.append({"loss": 2.0})
    assert means.summarize() == {"loss": 2.0}


def test_running_means_sum_tensors_where_they_are():
    """No float() per step: that would wait for the GPU in the middle of every training step."""
    means = RunningMeans()
    means.append({"loss": torch.tensor(1.5)})
    means.append({"loss": torch.tensor(2.5)})
    assert torch.is_tensor(means.sums["loss"]) and means.sums["loss"].dtype == torch.float64
    assert means.summarize() == {"loss": 2.0}


def test_confusion_counts_are_summed_over_processes(tmp_path):
    """In a (one-process) gloo group the all-reduce runs for real and sums."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        cm = ConfusionMatrix(2)
        cm.append(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
        cm.all_reduce()
        assert cm.counts.tolist() == [[1, 1], [0, 1]]
    finally:
        torch.distributed.destroy_process_group()
