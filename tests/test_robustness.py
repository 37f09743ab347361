"""Robustness reports, and robustness itself: the attack works, adversarial training defends."""

import csv
import os

import torch

from ser_adv_brain.metrics import ConfusionMatrix
from ser_adv_brain.robustness import markdown_table, robustness_rows, write_robustness_report


def confusion(correct, total, n_classes=2):
    """A 2-class confusion matrix with ``correct`` of ``total`` examples of class 0 right."""
    cm = ConfusionMatrix(n_classes)
    cm.append(torch.tensor([0] * correct + [1] * (total - correct)), torch.zeros(total, dtype=torch.long))
    return cm


RESULTS = {
    "valid": {0.0: confusion(4, 4), 0.02: confusion(3, 4), 0.1: confusion(1, 4)},
    "test": {0.0: confusion(8, 10), 0.02: confusion(5, 10), 0.1: confusion(0, 10)},
}


def test_rows():
    rows = robustness_rows(RESULTS)
    assert [(r["split"], r["eps"], r["data"], r["UAR"], r["n"]) for r in rows] == [
        ("valid", 0.0, "real", 1.0, 4), ("valid", 0.02, "fake", 0.75, 4), ("valid", 0.1, "fake", 0.25, 4),
        ("test", 0.0, "real", 0.8, 10), ("test", 0.02, "fake", 0.5, 10), ("test", 0.1, "fake", 0.0, 10),
    ]


def test_markdown_table_is_laid_out_like_the_paper():
    assert markdown_table(RESULTS, "cnn4_single") == (
        "### cnn4_single\n\n"
        "| data | eps | Dev UAR | Test UAR |\n"
        "|---|---|---|---|\n"
        "| real | 0.00 | 1.000 | 0.800 |\n"
        "| fake | 0.02 | 0.750 | 0.500 |\n"
        "| fake | 0.10 | 0.250 | 0.000 |\n"
    )


def test_report_files(tmp_path):
    table = write_robustness_report(RESULTS, str(tmp_path), "run", ["anger", "fear"])
    assert (tmp_path / "robustness.md").read_text() == table
    rows = list(csv.DictReader(open(tmp_path / "robustness.csv", encoding="utf-8")))
    assert [float(r["UAR"]) for r in rows] == [1.0, 0.75, 0.25, 0.8, 0.5, 0.0]
    assert sorted(os.listdir(tmp_path)) == ["confusion_test.csv", "confusion_valid.csv", "robustness.csv", "robustness.md"]
    test_confusion = list(csv.reader(open(tmp_path / "confusion_test.csv", encoding="utf-8")))
    assert test_confusion[1] == ["anger", "8", "2", "10", "0.8000"]  # real data (eps 0)
