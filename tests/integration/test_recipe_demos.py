"""End-to-end tiny runs of recipes/DEMoS/train.py, exactly as a user types them, and resuming."""

import csv
import glob
import os
import re

import pytest
from helpers import TINY, flags, markdown_rows, run_recipe, valid_uars

EPS_GRID = [0.0, 0.02, 0.04, 0.06, 0.08, 0.10]


def run(hparams_file, output_folder, *args):
    """The recipe at ``TINY`` size (epochs from ``args``) in a fresh process; its console output."""
    sizes = {key: value for key, value in TINY.items() if key != "number_of_epochs"}
    return run_recipe(hparams_file, f"--output_folder={output_folder}", *flags(**sizes), "--noprogressbar", *args)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def check_outputs(folder, output, epochs, adversarial_parts=(), loaded=None, eps_grid=EPS_GRID):
    """Manifests, checkpoints (the latest and the ``loaded`` one), train log, robustness report,
    confusion matrices, printed UARs."""
    loaded = loaded or epochs
    for name in (
        "train.csv",
        "valid.csv",
        "test.csv",
        "data_summary.md",
        "train_log.txt",
        "hyperparams.yaml",
        "robustness.csv",
        "robustness.md",
        "confusion_valid.csv",
        "confusion_test.csv",
    ):
        assert os.path.isfile(os.path.join(folder, name)), name
    checkpoints = glob.glob(os.path.join(folder, "save", "CKPT+*"))
    for checkpoint in checkpoints:
        for name in ("model.ckpt", "normalizer.ckpt", "counter.ckpt", "optimizer.ckpt"):
            assert os.path.isfile(os.path.join(checkpoint, name)), name
    kept = sorted(int(open(os.path.join(c, "counter.ckpt")).read()) for c in checkpoints)
    assert kept == sorted({loaded, epochs})

    log = open(os.path.join(folder, "train_log.txt"), encoding="utf-8").read()
    for epoch in range(1, epochs + 1):
        (line,) = [line for line in log.splitlines() if line.startswith(f"epoch: {epoch},")]
        assert "valid UAR" in line
        for part in adversarial_parts:
            assert f"train {part}:" in line
    logged_test = re.search(rf"Epoch loaded: {loaded} - test loss: .*, test UAR: ([0-9.e+-]+)", log)
    assert re.search(r"valid UAR: [0-9.e+-]+", output) and re.search(r"test UAR: [0-9.e+-]+", output)

    sizes = {split: len(read_csv(os.path.join(folder, f"{split}.csv"))) for split in ("valid", "test")}
    rows = read_csv(os.path.join(folder, "robustness.csv"))
    assert [(r["split"], float(r["eps"])) for r in rows] == [(s, e) for s in ("valid", "test") for e in eps_grid]
    for row in rows:
        assert int(row["n"]) == sizes[row["split"]]
        assert row["data"] == ("real" if float(row["eps"]) == 0 else "fake")
        assert 0.0 <= float(row["UAR"]) <= 1.0
    table = open(os.path.join(folder, "robustness.md"), encoding="utf-8").read()
    table_rows = markdown_rows(table)
    assert ["data", "eps", "Dev UAR", "Test UAR"] in table_rows
    assert any(row[:2] == ["fake", "0.10"] for row in table_rows)

    # The confusion matrix on real test data is the one behind robustness.csv's real test UAR.
    for split in ("valid", "test"):
        confusion = list(csv.reader(open(os.path.join(folder, f"confusion_{split}.csv"), encoding="utf-8")))
        assert len(confusion) == 1 + 7 + 1 and confusion[-1][0] == "UAR"
        assert int(confusion[-1][-2]) == sizes[split]
        real = next(r for r in rows if r["split"] == split and float(r["eps"]) == 0)
        assert float(confusion[-1][-1]) == pytest.approx(float(real["UAR"]), abs=1e-4)
    assert float(logged_test.group(1)) == pytest.approx(float(rows[len(eps_grid)]["UAR"]), abs=5e-3)


@pytest.mark.trained
def test_the_builtin_corpus_run_learns_and_tests_its_best_dev_epoch(trained):
    """No --data_folder: the built-in SYNTHETIC corpus is generated under the output folder, and a
    tiny model learns it clearly above chance (1/7); best_dev tests the epoch with the best dev UAR; FGSM
    lowers UAR.

    Which epoch is best depends on the host's floats: it is read from the run's own log, the latest of
    equals as SpeechBrain breaks ties (that the best, not the latest, is tested: ``tests/unit/test_brain.py``).
    The thresholds keep a margin over the lowest figures measured on every kernel setting and seed
    (best dev UAR .55, test UAR .48: ``docs/testing.md``).
    """
    folder, output = trained["out"], trained["output"]
    assert "SYNTHETIC" in output
    assert os.path.isfile(os.path.join(folder, "synthetic_demos", ".complete"))
    assert len(os.listdir(os.path.join(folder, "synthetic_demos", "DEMOS"))) == 6 * 7 * 3
    log = open(os.path.join(folder, "train_log.txt"), encoding="utf-8").read()
    uars = valid_uars(log)
    assert len(uars) == 12 and max(uars) >= 0.4
    best_epoch = max(range(1, 13), key=lambda epoch: (uars[epoch - 1], epoch))
    assert f"Epoch loaded: {best_epoch} - " in log
    check_outputs(folder, output, epochs=12, loaded=best_epoch, eps_grid=[0.0, 0.1])
    rows = {(r["split"], float(r["eps"])): float(r["UAR"]) for r in read_csv(os.path.join(folder, "robustness.csv"))}
    assert rows[("valid", 0.0)] == pytest.approx(max(uars), abs=5e-3) and rows[("test", 0.0)] >= 0.4
    assert rows[("valid", 0.1)] < rows[("valid", 0.0)] and rows[("test", 0.1)] < rows[("test", 0.0)]


def test_vanilla_recipe_resumes_from_epoch_2(tiny_corpus, tmp_path):
    folder = str(tmp_path / "vanilla")
    common = ["--warmup_steps=2", f"--data_folder={tiny_corpus}"]
    first = run("cnn4_vanilla", folder, "--number_of_epochs=1", *common)
    check_outputs(folder, first, epochs=1, adversarial_parts=("real_loss", "fake_loss"))
    assert "Going into epoch 1" in first

    second = run("cnn4_vanilla", folder, "--number_of_epochs=2", *common)
    assert "preparation skipped" in second
    assert "Resuming: feature statistics come with the checkpoint" in second
    assert "Going into epoch 1" not in second and "Going into epoch 2" in second
    check_outputs(folder, second, epochs=2, adversarial_parts=("real_loss", "fake_loss"))
