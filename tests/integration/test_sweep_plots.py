"""The paper-grid sweep (skip, resume, one run per GPU, its table) and the pictures (every plot, no matplotlib).

The sweep's tests run it on a stub recipe: a ``train.py`` that writes what a finished run
writes (``robustness.csv``, ``attack_suite.csv``, the model card) and logs how it was called,
so a grid of 11 runs takes seconds. The real recipe's end-of-run pictures are checked on the
shared tiny run of the DEMoS recipe (``trained``).
"""

import csv
import json
import os
import shutil
import sys
import textwrap

import numpy as np
import pytest
from helpers import markdown_rows

from ser_adv_brain.commands import grid, sweep
from ser_adv_brain.reports import plots
from ser_adv_brain.runs.finish import draw_run_pictures

STUB_TRAIN = textwrap.dedent('''
    """A stand-in for recipes/<corpus>/train.py: the outputs of a finished run, made up but distinct."""
    import hashlib, json, os, sys, time

    args = dict(a[2:].split("=", 1) for a in sys.argv[2:] if a.startswith("--") and "=" in a)
    out = args["output_folder"]
    name = os.path.basename(out)
    call = {"argv": sys.argv[1:], "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": time.time(),
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "kernels": {k: v for k, v in os.environ.items()
                        if k.endswith(("CPU_CAPABILITY", "CPU_ISA", "INSTRUCTIONS"))},
            "pythonpath": os.environ.get("PYTHONPATH", ""),
            "found_checkpoint": os.path.exists(os.path.join(out, "save", "CKPT"))}
    time.sleep(float(os.environ.get("STUB_SLEEP", "0")))
    call["end"] = time.time()
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write(json.dumps(call) + "\\n")
    if name in os.environ.get("STUB_FAIL", "").split(","):
        sys.exit(1)
    if os.environ.get("STUB_ALSO_FINISH"):  # another sweep finishing a run of this one's list
        os.makedirs(os.environ["STUB_ALSO_FINISH"])
        open(os.path.join(os.environ["STUB_ALSO_FINISH"], "README.md"), "w").close()

    def uar(*key):
        return int(hashlib.md5(repr((out, *key)).encode()).hexdigest()[:4], 16) / 65535

    with open(os.path.join(out, "robustness.csv"), "w") as f:
        f.write("split,eps,data,UAR,accuracy,n\\n")
        for split in ("valid", "test"):
            for eps in (0.0, 0.02, 0.04, 0.06, 0.08, 0.1):
                f.write(f"{split},{eps},{'real' if eps == 0 else 'fake'},{uar(split, eps)},0.5,80\\n")
    with open(os.path.join(out, "attack_suite.csv"), "w") as f:
        f.write("split,threat_model,budget,attack,UAR_alone,UAR_worst_so_far,attacked,fooled\\n")
        for split in ("valid", "test"):
            for eps in (0.02, 0.04):
                f.write(f"{split},features_linf,{eps},PGD-10,{uar(split, eps, 'pgd')},{uar(split, eps, 'pgd')},80,3\\n")
                f.write(f"{split},features_linf,{eps},robust,,{uar(split, eps, 'robust')},,3\\n")
    os.makedirs(os.path.join(out, "interface"), exist_ok=True)
    open(os.path.join(out, "interface", "README.md"), "w").close()
''')


@pytest.fixture
def stub_recipe(tmp_path, monkeypatch):
    """A recipe folder with the stub ``train.py`` and the nine yaml names; calls logged in ``calls.jsonl``."""
    recipe = tmp_path / "recipes" / "Stub"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text(STUB_TRAIN)
    for model in sweep.MODELS:
        for mode in sweep.MODES:
            keys = "base_channels: 64\n" + ("" if mode == "single" else "warmup_steps: 1000\n")
            (recipe / "hparams" / f"{model}_{mode}.yaml").write_text(keys)
    monkeypatch.setenv("STUB_LOG", str(tmp_path / "calls.jsonl"))
    return {"recipe": str(recipe), "out": str(tmp_path / "grid"), "log": tmp_path / "calls.jsonl"}


def calls(stub):
    if not stub["log"].exists():
        return []
    return [json.loads(line) for line in stub["log"].read_text().splitlines()]


def run_sweep(stub, *options):
    sweep.main([stub["recipe"], f"--output_folder={stub['out']}", *options, "--base_channels=16"])


def called_runs(stub):
    return [os.path.basename(c["argv"][1].split("=", 1)[1]) for c in calls(stub)]


def test_sweep_skips_finished_runs_and_resumes_half_finished_ones(stub_recipe):
    out = stub_recipe["out"]
    run_sweep(stub_recipe, "--models", "cnn4", "--modes", "single")  # a finished run
    # A half-finished run: a checkpoint, no model card.
    half = os.path.join(out, "cnn4_vanilla_eps0.02")
    os.makedirs(os.path.join(half, "save", "CKPT"))
    stub_recipe["log"].unlink()
    options = ["--models", "cnn4", "--eps=[0.02, 0.04]"]
    run_sweep(stub_recipe, *options)
    started = dict(zip(called_runs(stub_recipe), calls(stub_recipe)))
    assert sorted(started) == [
        "cnn4_similarity_eps0.02",
        "cnn4_similarity_eps0.04",
        "cnn4_vanilla_eps0.02",
        "cnn4_vanilla_eps0.04",
    ]
    # The half-finished run got the same command as a fresh one, in its own folder, its checkpoint still there.
    resumed = started["cnn4_vanilla_eps0.02"]
    assert resumed["found_checkpoint"]
    assert resumed["pythonpath"].split(os.pathsep)[0] == os.path.dirname(os.path.dirname(sweep.__file__))
    assert resumed["argv"] == [
        os.path.join(stub_recipe["recipe"], "hparams", "cnn4_vanilla.yaml"),
        f"--output_folder={half}",
        "--attack_eps=0.02",
        "--base_channels=16",
    ]
    # --report_only starts nothing (a run removed meanwhile stays missing); without it, only that run runs.
    shutil.rmtree(os.path.join(out, "cnn4_vanilla_eps0.04"))
    stub_recipe["log"].unlink()
    run_sweep(stub_recipe, *options, "--report_only")
    assert calls(stub_recipe) == []
    assert len(list(csv.DictReader(open(os.path.join(out, "paper_table.csv"))))) == 2 * (1 + 2 + 3 * 2)
    run_sweep(stub_recipe, *options)
    assert called_runs(stub_recipe) == ["cnn4_vanilla_eps0.04"]
    stub_recipe["log"].unlink()
    run_sweep(stub_recipe, *options)
    assert calls(stub_recipe) == []
    assert len(list(csv.DictReader(open(os.path.join(out, "paper_table.csv"))))) == 2 * (1 + 2 + 4 * 2)


def test_failed_run_is_reported_and_rerun_later(stub_recipe, monkeypatch):
    monkeypatch.setenv("STUB_FAIL", "cnn4_vanilla_eps0.02")
    with pytest.raises(SystemExit) as failure:
        run_sweep(stub_recipe, "--models", "cnn4", "--modes", "single", "vanilla", "--eps=[0.02, 0.04]")
    assert failure.value.code == 1
    assert len(calls(stub_recipe)) == 3  # the others ran on
    monkeypatch.delenv("STUB_FAIL")
    stub_recipe["log"].unlink()
    run_sweep(stub_recipe, "--models", "cnn4", "--modes", "single", "vanilla", "--eps=[0.02, 0.04]")
    assert called_runs(stub_recipe) == ["cnn4_vanilla_eps0.02"]


def test_a_run_finished_meanwhile_by_another_sweep_is_not_started_again(stub_recipe, monkeypatch):
    monkeypatch.setenv("STUB_ALSO_FINISH", os.path.join(stub_recipe["out"], "cnn4_vanilla_eps0.02", "interface"))
    with pytest.raises(FileNotFoundError):  # the table finds that run's model card but not its CSVs
        run_sweep(stub_recipe, "--models", "cnn4", "--modes", "single", "vanilla", "--eps=[0.02]")
    assert called_runs(stub_recipe) == ["cnn4_single"]


def test_one_run_per_gpu_at_a_time(stub_recipe, monkeypatch):
    monkeypatch.setenv("STUB_SLEEP", "0.3")
    run_sweep(stub_recipe, "--models", "cnn4", "--eps=[0.02, 0.04]", "--gpus", "0", "1")
    done = calls(stub_recipe)
    assert len(done) == 5 and {c["gpu"] for c in done} == {"0", "1"}
    for a in done:
        for b in done:
            if a is not b and a["gpu"] == b["gpu"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], "two runs shared a GPU"
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for a in done for b in done if a is not b), (
        "never in parallel"
    )


def test_jobs_run_that_many_at_a_time_on_the_cpu_each_with_its_share_of_the_cores(stub_recipe, monkeypatch):
    monkeypatch.setenv("STUB_SLEEP", "0.3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(grid.os, "cpu_count", lambda: 8)
    run_sweep(stub_recipe, "--models", "cnn4", "--eps=[0.02, 0.04]", "--jobs", "3")
    done = calls(stub_recipe)
    assert len(done) == 5 and {c["threads"] for c in done} == {"2"} and {c["gpu"] for c in done} == {None}
    at_once = [sum(a["start"] <= b["start"] < a["end"] for a in done) for b in done]
    assert max(at_once) == 3, at_once
    # A thread count the user set is kept; --jobs with --gpus is refused before any run.
    stub_recipe["log"].unlink()
    shutil.rmtree(stub_recipe["out"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_sweep(stub_recipe, "--models", "cnn4", "--eps=[0.02]", "--jobs", "2")
    assert {c["threads"] for c in calls(stub_recipe)} == {"1"}
    stub_recipe["log"].unlink()
    with pytest.raises(SystemExit):
        run_sweep(stub_recipe, "--models", "cnn4", "--eps=[0.02]", "--jobs", "2", "--gpus", "0")
    assert not stub_recipe["log"].exists()


def test_unknown_model_and_sweep_owned_option_are_refused_before_any_run(stub_recipe):
    with pytest.raises(FileNotFoundError, match="cnn5_single.yaml"):
        run_sweep(stub_recipe, "--models", "cnn5")
    with pytest.raises(SystemExit):
        run_sweep(stub_recipe, "--attack_eps=0.02")
    with pytest.raises(SystemExit, match="base_chanels"):  # a key no yaml of the grid has: a typo
        run_sweep(stub_recipe, "--models", "cnn4", "--base_chanels=8")
    assert calls(stub_recipe) == []


def test_a_yaml_key_goes_to_the_runs_whose_yaml_has_it_run_options_to_all(stub_recipe):
    run_sweep(
        stub_recipe,
        "--models",
        "cnn4",
        "--modes",
        "single",
        "vanilla",
        "--eps=[0.02]",
        "--warmup_steps=20",
        "--device=cpu",
    )
    argv = {run: call["argv"][2:] for run, call in zip(called_runs(stub_recipe), calls(stub_recipe))}
    assert argv == {
        "cnn4_single": ["--device=cpu", "--base_channels=16"],
        "cnn4_vanilla_eps0.02": ["--attack_eps=0.02", "--warmup_steps=20", "--device=cpu", "--base_channels=16"],
    }


def test_paper_table_matches_the_runs_csv_files(stub_recipe):
    run_sweep(stub_recipe, "--models", "cnn4", "vgg16", "--eps=[0.02, 0.04]")
    out = stub_recipe["out"]
    rows = list(csv.DictReader(open(os.path.join(out, "paper_table.csv"), encoding="utf-8")))
    assert len(rows) == 2 * 2 * (3 + 4 * 2)  # models x splits x (single: real, 2 fake; 4 AT runs: real, fake)
    for row in rows:
        folder = os.path.join(out, row["run"])
        fgsm = {
            (r["split"], float(r["eps"])): r["UAR"]
            for r in csv.DictReader(open(os.path.join(folder, "robustness.csv")))
        }
        assert float(row["UAR"]) == float(fgsm[(row["split"], float(row["eps"]))])
        eps = 0.0 if row["data"] == "real" else float(row["train_eps"] or row["eps"])
        assert float(row["eps"]) == eps
        robust = {
            (r["split"], float(r["budget"])): r["UAR_worst_so_far"]
            for r in csv.DictReader(open(os.path.join(folder, "attack_suite.csv")))
            if r["attack"] == "robust"
        }
        expected = robust.get((row["split"], eps)) if row["data"] == "fake" else None
        assert (float(row["robust_UAR"]) if row["robust_UAR"] else None) == (
            None if expected is None else float(expected)
        )
    single = {r["split"]: r for r in rows if (r["model"], r["training"], r["data"]) == ("cnn4", "single", "real")}
    assert (float(single["valid"]["paper_UAR"]), float(single["test"]["paper_UAR"])) == (0.826, 0.836)
    # The markdown shows the same numbers: dev / test, ours then the paper's then robust UAR.
    table = open(os.path.join(out, "paper_table.md"), encoding="utf-8").read()
    vanilla = {
        r["split"]: r
        for r in rows
        if (r["model"], r["training"], r["train_eps"], r["data"]) == ("cnn4", "vanilla", "0.02", "fake")
    }
    line = next(row for row in markdown_rows(table) if row[:2] == ["vanilla, eps 0.02", "fake, eps 0.02"])
    dev, test = (f"{float(vanilla[s]['UAR']):.3f}".replace("0.", ".", 1) for s in ("valid", "test"))
    assert line[2] == f"{dev} / {test}" and line[3] == ".744 / .800"
    assert os.path.getsize(os.path.join(out, "robustness_cnn4.png")) > 1000


def test_replicates_run_once_per_seed_and_kernel_setting_and_the_table_gives_their_mean_and_range(
    stub_recipe, monkeypatch
):
    for variable in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(variable, raising=False)
    options = ["--models", "cnn4", "--modes", "single", "--seeds", "7", "8", "--cpu_kernels", "native", "avx2"]
    run_sweep(stub_recipe, *options)
    done = {os.path.relpath(c["argv"][1].split("=", 1)[1], stub_recipe["out"]): c for c in calls(stub_recipe)}
    assert sorted(done) == [
        os.path.join("cnn4_single", r) for r in ("seed7-avx2", "seed7-native", "seed8-avx2", "seed8-native")
    ]
    for replicate, call in done.items():
        seed, kernels = replicate.split(os.sep)[1][len("seed") :].split("-")
        assert call["argv"][2:] == [f"--seed={seed}", "--base_channels=16"]
        assert call["kernels"] == sweep.CPU_KERNELS[kernels]
    rows = list(csv.DictReader(open(os.path.join(stub_recipe["out"], "paper_table.csv"), encoding="utf-8")))
    real = {
        r["split"]: [float(x["UAR"]) for x in rows if x["split"] == r["split"] and x["data"] == "real"] for r in rows
    }
    assert all(len(values) == 4 for values in real.values())
    table = open(os.path.join(stub_recipe["out"], "paper_table.md"), encoding="utf-8").read()
    line = next(row for row in markdown_rows(table) if row[:2] == ["single", "real"])

    def short(value):
        return f"{value:.3f}".replace("0.", ".", 1)

    expected = [f"{short(sum(v) / 4)} [{short(min(v))}, {short(max(v))}]" for v in (real["valid"], real["test"])]
    assert line[2] == " / ".join(expected)
    # A grid still running: a cell over fewer replicates than the grid's says how many it has.
    os.remove(os.path.join(stub_recipe["out"], "cnn4_single", "seed8-avx2", grid.FINISHED_MARKER))
    run_sweep(stub_recipe, *options, "--report_only")
    table = open(os.path.join(stub_recipe["out"], "paper_table.md"), encoding="utf-8").read()
    line = next(row for row in markdown_rows(table) if row[:2] == ["single", "real"])
    assert line[2].count("(3 of 4)") == 2 and line[3] == ".826 / .836"
    with pytest.raises(SystemExit):  # the seed is the sweep's to set
        run_sweep(stub_recipe, "--models", "cnn4", "--modes", "single", "--seeds", "7", "--seed=3")


# Hand-made CSVs as the runs write them (7 classes).
LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text).lstrip())
    return str(path)


@pytest.fixture
def run_folder(tmp_path):
    write(
        tmp_path / "robustness.csv",
        """
        split,eps,data,UAR,accuracy,n
        valid,0.0,real,0.70,0.7,81
        valid,0.02,fake,0.45,0.4,81
        valid,0.1,fake,0.20,0.2,81
        test,0.0,real,0.72,0.7,107
        test,0.02,fake,0.44,0.4,107
        test,0.1,fake,0.23,0.2,107
    """,
    )
    suite = ["split,threat_model,budget,attack,UAR_alone,UAR_worst_so_far,attacked,fooled"]
    for split in ("valid", "test"):
        suite += [f"{split},features_linf,{e},PGD-10,{0.5 - 2 * e},{0.5 - 2 * e},80,9" for e in (0.02, 0.04, 0.1)]
        suite += [f"{split},features_linf,{e},SquareAttack,,{0.45 - 2 * e},30,1" for e in (0.02, 0.04, 0.1)]
        suite += [f"{split},features_linf,{e},robust,,{0.45 - 2 * e},,9" for e in (0.02, 0.04, 0.1)]
        suite += [f"{split},waveform_snr,{s},WaveformPGD-10,{s / 100},{s / 100},80,9" for s in (40, 30, 20)]
        suite += [f"{split},waveform_snr,{s},robust,,{s / 100},,9" for s in (40, 30, 20)]
    write(tmp_path / "attack_suite.csv", "\n".join(suite) + "\n")
    matrix = ["true \\ predicted," + ",".join(LABELS) + ",support,recall"]
    matrix += [
        f"{label}," + ",".join("3" if i == j else "1" for j in range(7)) + ",9,0.3333" for i, label in enumerate(LABELS)
    ]
    matrix += ["UAR,,,,,,,,63,0.3333"]
    write(tmp_path / "confusion_test.csv", "\n".join(matrix) + "\n")
    write(tmp_path / "confusion_test_eps0.02.csv", "\n".join(matrix) + "\n")
    epoch_2 = (
        "epoch: 2, lr: 1.00e-03 - train loss: 1.12, train real_loss: 1.03, train fake_loss: 1.10 - "
        "valid loss: 1.35, valid UAR: 4.75e-01, valid accuracy: 4.81e-01"
    )
    log = [
        "epoch: 1, lr: 1.00e-03 - train loss: 1.73 - valid loss: 2.56, valid UAR: 2.23e-01, valid accuracy: 1.60e-01",
        epoch_2,
        "Epoch loaded: 2 - test loss: 1.2, test UAR: 5.0e-01, test accuracy: 5.1e-01",
    ]
    write(tmp_path / "train_log.txt", "\n".join(log) + "\n")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 16)).astype("float32")
    np.savez(
        tmp_path / "spectrogram_triptych.npz",
        real=real,
        fake=real + 0.02 * np.sign(rng.normal(size=real.shape)),
        eps=0.02,
        utterance="03a01Fa",
        true="happiness",
        predicted_real="happiness",
        predicted_fake="anger",
    )
    rates = [
        f"{label}," + ",".join("1.0000" if i == j else "0.2500" for j in range(7)) for i, label in enumerate(LABELS)
    ]
    write(tmp_path / "success_matrix.csv", "\n".join(["true \\ target," + ",".join(LABELS), *rates]) + "\n")
    return tmp_path


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def test_every_plot_writes_a_png_beside_its_csv(run_folder, tmp_path):
    drawn = plots.draw_run(str(run_folder))
    names = sorted(os.path.basename(p) for p in drawn)
    assert names == [
        "confusion_test.png",
        "confusion_test_eps0.02.png",
        "robustness.png",
        "spectrogram_triptych.png",
        "success_matrix.png",
        "train_log.png",
    ]
    assert all(is_png(p) for p in drawn)
    epochs = plots.parse_train_log(str(run_folder / "train_log.txt"))
    assert (
        [e["epoch"] for e in epochs] == [1, 2]
        and epochs[1]["train fake_loss"] == 1.10
        and epochs[0]["valid UAR"] == 0.223
    )
    transfer = ["eps,source,target,UAR"]
    transfer += [f"{e},runs/{s},runs/{t},{0.3 if s == t else 0.6}" for e in (0.02, 0.1) for s in "ab" for t in "ab"]
    transfer += ["real,,runs/a,0.8", "real,,runs/b,0.7"]
    assert is_png(plots.plot_transfer(write(tmp_path / "transfer.csv", "\n".join(transfer) + "\n")))
    grid = ["model,training,train_eps,split,eps,UAR"]
    for mode, train_eps in [("single", ""), ("vanilla", 0.02), ("similarity", 0.02)]:
        grid += [
            f"cnn4,{mode},{train_eps},{s},{e},{0.8 - e * (3 if mode == 'single' else 2)}"
            for s in ("valid", "test")
            for e in (0.0, 0.02, 0.1)
        ]
    drawn = plots.plot_grid_curves(write(tmp_path / "grid_robustness.csv", "\n".join(grid) + "\n"))
    assert [os.path.basename(p) for p in drawn] == ["robustness_cnn4.png"]
    assert is_png(tmp_path / "robustness_cnn4.png")


def test_without_matplotlib_a_message_instead_of_a_crash(run_folder, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setattr(plots.pyplot, "warned", False, raising=False)
    with caplog.at_level("WARNING"):
        assert plots.draw_run(str(run_folder)) == []
        assert plots.plot_confusion(str(run_folder / "confusion_test.csv")) is None
        assert draw_run_pictures(None, {"output_folder": str(run_folder)}, None, None, str(run_folder)) == []
    assert [r.getMessage() for r in caplog.records] == [plots.MISSING]  # said once
    assert not list(run_folder.glob("*.png"))


def test_the_recipe_draws_the_pictures_of_its_run(trained):
    out = trained["out"]
    for name in ["robustness.png", "train_log.png", "spectrogram_triptych.png", "confusion_test.png"]:
        assert is_png(os.path.join(out, name)), name
    triptych = np.load(os.path.join(out, "spectrogram_triptych.npz"))
    assert triptych["real"].shape == triptych["fake"].shape
    assert np.abs(triptych["fake"] - triptych["real"]).max() == pytest.approx(float(triptych["eps"]), rel=1e-3)


def test_the_robustness_picture_is_titled_with_the_run_not_its_seed_folder(tmp_path):
    run = tmp_path / "cnn4_trades" / "fold0-seed1234"
    os.makedirs(run / "standard")
    # Read as text: a tag that cannot load must not matter to a title.
    write(run / "hyperparams.yaml", "seed: 1234\nexperiment_name: cnn4_trades\nmodel: !new:no_such.Module\n")
    assert plots.run_title(str(run)) == "cnn4_trades (fold0-seed1234)"
    assert plots.run_title(str(run / "standard")) == "cnn4_trades (fold0-seed1234, standard)"
    assert plots.run_title(str(tmp_path)) == os.path.basename(tmp_path)


def test_the_benchmark_picture_labels_every_decibel_budget_in_db(tmp_path, monkeypatch):
    """A universal perturbation's budget (dB below a reference level) is in dB as an SNR is: the picture
    asks the suite which threat models are in decibels, not the name's ending. It draws robust UAR only: an
    over-the-air threat model's other two figures are the table's."""
    rows = [("real", 0.6, "real"), ("features_linf@0.02", 0.3, "robust"), ("waveform_universal@30", 0.5, "robust")]
    rows += [("waveform_room_snr@40", 0.2, "robust"), ("waveform_room_snr@40 heard directly", 0.4, "heard directly")]
    rows += [("waveform_room_snr real data in the rooms", 0.5, "real data in the rooms")]
    path = tmp_path / "benchmark.csv"
    lines = "".join(f"single,{f},{kind},{u},{u - 0.1},{u + 0.1}\n" for f, u, kind in rows)
    write(path, "training,figure,kind,UAR,low,high\n" + lines)
    shown = {}
    monkeypatch.setattr(plots, "save", lambda fig, _: shown.setdefault("axes", fig.axes))
    plots.plot_benchmark(str(path))
    ticks = {ax.get_title(): [t.get_text() for t in ax.get_xticklabels()] for ax in shown["axes"]}
    assert ticks == {
        plots.PANEL_TITLES["features_linf"]: ["real", "0.02"],
        plots.PANEL_TITLES["waveform_universal"]: ["real", "30 dB"],
        plots.PANEL_TITLES["waveform_room_snr"]: ["real", "40 dB"],
    }
