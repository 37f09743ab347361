"""Every row of ``tests/recipes/*.csv`` runs with its debug flags, as SpeechBrain's recipe tests run it.

The command is SpeechBrain's: ``python <Script_file> <Hparam_file> <test_debug_flags>
<run options> --output_folder=<folder> --debug --debug_persistently``, from the
repository root, on the CPU; then every ``file_exists`` check must hold.
"""

import csv
import glob
import os
import re
import shlex
import sys

import pytest
import torch
from helpers import files_to_check, recipe_rows, run_command

ROWS = recipe_rows()


@pytest.mark.parametrize(
    "row",
    [row for _, row in ROWS],
    ids=[f"{recipe_id}-{os.path.basename(row['Hparam_file'])}" for recipe_id, row in ROWS],
)
def test_recipe_runs_with_its_debug_flags(row, tmp_path):
    flags = shlex.split(row["test_debug_flags"])
    output_folder = next((f.split("=", 1)[1] for f in flags if f.startswith("--output_folder=")), None)
    if output_folder is None:
        output_folder = str(tmp_path / "output")
        flags.append(f"--output_folder={output_folder}")
    command = [sys.executable, row["Script_file"], row["Hparam_file"], *flags, "--device=cpu"]
    run_command([*command, "--debug", "--debug_persistently"])
    missing = [
        name
        for name in files_to_check(row["test_debug_checks"])
        if not os.path.exists(os.path.join(output_folder, name))
    ]
    assert not missing, f"{row['Hparam_file']}: no {missing} in {output_folder}"
    check_contents(
        output_folder,
        flags,
        # Single training, TRADES and randomised smoothing (noisy copies only) log no fake-data loss.
        adversarial=not row["Hparam_file"].endswith("_single.yaml")
        and "_trades" not in row["Hparam_file"]
        and "_smoothing_" not in row["Hparam_file"],
        similarity=row["Hparam_file"].endswith("_similarity.yaml"),
    )


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def flag(flags, name):
    return next(f.split("=", 1)[1] for f in flags if f.startswith(f"--{name}="))


def check_contents(folder, flags, adversarial, similarity):
    """What the files hold: every epoch logged with its parts, speaker-disjoint manifests over the
    seven emotions, one robustness row per split and eps, UARs recomputed from the confusion counts,
    and the interface holding the checkpoint's weights and the run's label order."""
    epochs = int(flag(flags, "number_of_epochs"))
    eps_grid = [float(e) for e in flag(flags, "eval_eps").strip("[]").split(",")]
    log = open(os.path.join(folder, "train_log.txt"), encoding="utf-8").read().splitlines()
    epoch_lines = [line for line in log if line.startswith("epoch: ")]
    assert [int(re.match(r"epoch: (\d+),", line).group(1)) for line in epoch_lines] == list(range(1, epochs + 1))
    for line in epoch_lines:
        assert "valid UAR:" in line
        assert ("train fake_loss:" in line) is adversarial and ("train distance:" in line) is similarity
    assert any(line.startswith("Epoch loaded: ") and "test UAR:" in line for line in log)

    manifests = {split: read_csv(os.path.join(folder, f"{split}.csv")) for split in ("train", "valid", "test")}
    speakers = {split: {r["spk_id"] for r in rows} for split, rows in manifests.items()}
    assert not (
        speakers["train"] & speakers["valid"]
        or speakers["train"] & speakers["test"]
        or speakers["valid"] & speakers["test"]
    )
    assert all(os.path.isfile(r["wav"]) for rows in manifests.values() for r in rows)
    encoder_text = open(os.path.join(folder, "save", "label_encoder.txt"), encoding="utf-8").read()
    labels = re.findall(r"^'(.+)' => \d+$", encoder_text.split("=" * 16)[0], re.M)  # before SpeechBrain's footer
    assert len(labels) == 7 and {r["emo"] for r in manifests["train"]} == set(labels)

    rows = read_csv(os.path.join(folder, "robustness.csv"))
    assert [(r["split"], float(r["eps"])) for r in rows] == [(s, e) for s in ("valid", "test") for e in eps_grid]
    for split in ("valid", "test"):
        assert all(int(r["n"]) == len(manifests[split]) for r in rows if r["split"] == split)
        confusion = list(csv.reader(open(os.path.join(folder, f"confusion_{split}.csv"), encoding="utf-8")))
        counts = [[int(c) for c in line[1:8]] for line in confusion[1:8]]
        recalls = [row[i] / sum(row) for i, row in enumerate(counts)]
        real = next(r for r in rows if r["split"] == split and float(r["eps"]) == 0.0)
        assert float(real["UAR"]) == pytest.approx(sum(recalls) / 7)
        assert sum(map(sum, counts)) == len(manifests[split])

    interface = os.path.join(folder, "interface")
    assert (
        open(os.path.join(interface, "label_encoder.ckpt")).read()
        == open(os.path.join(folder, "save", "label_encoder.txt")).read()
    )
    (checkpoint,) = glob.glob(os.path.join(folder, "save", "CKPT+*"))
    exported, saved = (torch.load(os.path.join(f, "model.ckpt")) for f in (interface, checkpoint))
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)
