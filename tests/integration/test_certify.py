"""Randomised smoothing end to end: a tiny ``cnn4_smoothing_waveform`` run of the EmoDB recipe on the sample clips
ends with its certificates and exports them; ``ser-adv certify`` certifies and attacks it again; the exported
interface certifies an utterance exactly as the run did."""

import math
import os
import shutil
import subprocess
import sys

import pytest
from helpers import (
    EMODB_SAMPLE_FOLDS,
    EMODB_SAMPLES,
    TINY,
    flags,
    markdown_rows,
    run_command,
    run_recipe,
    subprocess_env,
)

from ser_adv_brain.commands import benchmark as benchmark_command
from ser_adv_brain.commands import certify as certify_command
from ser_adv_brain.evaluation.progress import BatchProgress
from ser_adv_brain.evaluation.smoothing import RandomizedSmoothing
from ser_adv_brain.interface import EmotionRecognizer
from ser_adv_brain.reports.entry import read_entries
from ser_adv_brain.tables import read_csv, uar_text

HPARAMS = "recipes/EmoDB/hparams/cnn4_smoothing_waveform.yaml"
SIGMA = 0.25  # the yaml's
# APGD with its gradients averaged over 2 noise draws (the rand tier's 20, at 100 steps, cost minutes).
EOT_ATTACK = "!new:ser_adv_brain.attacks.WaveformAPGD {eps: 20, steps: 2, eot_iter: 2, label_source: target}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run, its suite cut to one FGSM budget (this file checks the smoothing, not the suite)."""
    out = tmp_path_factory.mktemp("smoothing") / "run"
    run_recipe(
        HPARAMS,
        *flags(
            **{
                **TINY,
                **EMODB_SAMPLE_FOLDS,
                "warmup_steps": 0,
                "smoothing_n0": 4,
                "smoothing_n": 16,
                "suite_budgets": "{features_linf: [0.1], waveform_snr: [30, 20]}",
            }
        ),
        "--eval_eps=[0.0]",
        "--attack_suite=\n  - !new:ser_adv_brain.attacks.FGSM\n      eps: 0.1",
        f"--data_folder={EMODB_SAMPLES}",
        f"--output_folder={out}",
        "--noprogressbar",
    )
    return out


def test_the_run_ends_with_the_certificates_of_its_test_split_and_exports_its_smoothing(run):
    rows = read_csv(run / "certificates.csv")
    assert sorted(r["id"] for r in rows) == sorted(r["ID"] for r in read_csv(run / "test.csv"))
    limit = RandomizedSmoothing(sigma=SIGMA, n0=4, n=16).max_radius
    for row in rows:
        radius = float(row["radius"])
        assert 0 <= radius <= limit * (1 + 1e-5) and (radius == 0) == (row["prediction"] == "abstain")
        if radius > 0:
            assert float(row["radius_snr_db"]) == pytest.approx(
                20 * math.log10(float(row["signal_norm"]) / radius), abs=0.01
            )
    report = (run / "certification.md").read_text()
    for fact in ("**Certified object**", "**Noise**", "**Gain policy**", "**Radius in dB**", "n = 16"):
        assert fact in report
    budgets = [row[:2] for row in markdown_rows(report) if row[0] == "waveform_snr"]
    assert budgets == [["waveform_snr", "30"], ["waveform_snr", "20"]]
    assert os.path.getsize(run / "certified_uar.png") > 5000
    exported = (run / "interface" / "hyperparams.yaml").read_text()
    assert "smoothing: !new:ser_adv_brain.evaluation.smoothing.RandomizedSmoothing" in exported
    for line in ("domain: waveform", f"sigma: {SIGMA}", "n0: 4", "n: 16", "alpha: 0.001"):
        assert f"    {line}\n" in exported


def test_the_run_keeps_its_certificates_in_a_benchmark_entry_which_the_benchmark_aggregates(run, capsys):
    """The entry of the certified tier holds every utterance's certificate as ``certificates.csv`` has it, and
    certified UAR at the run's budgets as ``certification.md``; ``ser-adv benchmark --report_only
    --tier=certified`` gives the same figures from it."""
    (entry,) = read_entries(run / "certified")
    assert (entry["name"], entry["tier"], entry["adaptive_attack"]) == (
        f"cnn4_smoothing_waveform_sigma{SIGMA}",
        "certified",
        None,
    )
    csv_rows = {r["id"]: r for r in read_csv(run / "certificates.csv")}
    assert [r["id"] for r in entry["per_utterance"]] == sorted(csv_rows)
    for row in entry["per_utterance"]:
        kept = csv_rows[row["id"]]
        assert (row["certificate"]["prediction"] or "abstain", row["emotion"]) == (kept["prediction"], kept["emotion"])
        assert f"{row['certificate']['radius']:.6g}" == kept["radius"]
    certified = {r[1]: r[3] for r in markdown_rows((run / "certification.md").read_text()) if r[0] == "waveform_snr"}
    assert {f"{r['budget']:g}": uar_text(r["robust_UAR"]) for r in entry["results"]} == certified
    benchmark_command.main(
        [
            "recipes/EmoDB",
            "--report_only",
            "--tier=certified",
            "--trainings",
            entry["name"],
            f"--output_folder={run.parent}",
        ]
    )
    (table,) = [
        r for r in markdown_rows((run.parent / "certified" / "benchmark.md").read_text()) if r[0] == entry["name"]
    ]
    assert [cell.split(" ")[0] for cell in table[2:]] == [certified["30"], certified["20"]]
    with pytest.raises(SystemExit):
        benchmark_command.parse_arguments(["recipes/EmoDB", "--tier=certified"])
    assert "made by ser-adv certify RUN" in capsys.readouterr().err


def test_the_interface_certifies_an_utterance_as_the_run_did(run, tmp_path):
    recognizer = EmotionRecognizer.from_hparams(source=str(run / "interface"), savedir=str(tmp_path))
    row = read_csv(run / "test.csv")[0]
    certified = next(r for r in read_csv(run / "certificates.csv") if r["id"] == row["ID"])
    index, labels, radius, snr = recognizer.certify_batch(recognizer.load_audio(row["wav"]), keys=[row["ID"]])
    assert labels == [certified["prediction"]] and f"{float(radius[0]):.6g}" == certified["radius"]
    assert f"{float(snr[0]):.2f}" == certified["radius_snr_db"] or float(radius[0]) == 0
    out_prob, score, index, labels = recognizer.classify_file(row["wav"], smoothing=True)
    assert out_prob.shape == (1, 7) and (labels[0] == "abstain") == (int(index[0]) == -1)


def test_certify_recertifies_at_another_sigma_and_attacks_with_expectation_over_the_noise(run, tmp_path):
    """Through the installed console script, as users type it."""
    out = tmp_path / "sigma0.5"
    run_command(
        [
            shutil.which("ser-adv"),
            "certify",
            run,
            "--sigma=0.5",
            "--n0=3",
            "--n=10",
            f"--attacks=[{EOT_ATTACK}]",
            "--budgets={waveform_snr: [20]}",
            f"--output_folder={out}",
            "--noprogressbar",
        ]
    )
    assert "sigma = 0.5," in (out / "certification.md").read_text()
    limit = RandomizedSmoothing(sigma=0.5, n0=3, n=10).max_radius
    assert max(float(r["radius"]) for r in read_csv(out / "certificates.csv")) <= limit * (1 + 1e-5)
    attacked = read_csv(out / "smoothed_attack.csv")
    assert [(r["threat_model"], r["budget"], r["attack"]) for r in attacked] == [
        ("waveform_snr", "20.0", "WaveformAPGD-CE"),
        ("waveform_snr", "20.0", "robust"),
    ]
    # Ten votes certify at most 0.0013, far below any utterance's radius at 20 dB: nothing is certified,
    # so nothing certified can be fooled.
    (row,) = [r for r in markdown_rows((out / "certification.md").read_text()) if r[0] == "waveform_snr"]
    assert row[3:] == [".000", row[4], "0"] and 0 <= float(row[4]) <= 1
    assert (run / "certificates.csv").read_text() != (out / "certificates.csv").read_text()


def test_a_killed_certify_resumes_where_it_stopped_and_another_smoothing_starts_afresh(run, tmp_path, monkeypatch):
    """``ser-adv certify`` killed after its first batch, run again: it certifies only the batches left and
    writes the run's own certificates; a certification with other settings sets the kept batches aside."""
    out = tmp_path / "again"
    progress = out / "certificates_progress_test.json"
    certify_once, record_once, calls = RandomizedSmoothing.certify, BatchProgress.record, []
    monkeypatch.setattr(RandomizedSmoothing, "certify", lambda *a, **k: calls.append(1) or certify_once(*a, **k))

    def killed(*options):
        monkeypatch.setattr(BatchProgress, "record", lambda *a: record_once(*a) or sys.exit("killed"))
        with pytest.raises(SystemExit, match="killed"):
            certify_command.main([str(run), f"--output_folder={out}", "--noprogressbar", *options])
        monkeypatch.setattr(BatchProgress, "record", record_once)
        assert progress.is_file()

    def certified(*options):
        calls.clear()
        certify_command.main([str(run), f"--output_folder={out}", "--noprogressbar", *options])
        return len(calls)

    killed()
    left = certified()
    assert (out / "certificates.csv").read_text() == (run / "certificates.csv").read_text()
    batches = left + 1
    assert batches > 1
    assert certified() == 0  # kept after the report: the same certification again votes nothing
    assert certified("--n=17") == batches and (tmp_path / "again" / f"{progress.name}.other").is_file()


def test_the_adaptive_attack_added_to_a_finished_run_reads_its_certificates_back(run, tmp_path, monkeypatch):
    """``ser-adv certify --attacks`` on the run's folder votes nothing again: the certificates its training wrote
    are read back, and only the attack runs. Here the folder is moved (copied, the paths in its hyperparams.yaml
    changed as ``load_trained``'s error advises): the same checkpoint at another path is the same run."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    saved = copy / "hyperparams.yaml"
    saved.write_text(saved.read_text().replace(str(run), str(copy)))
    certify_once, calls = RandomizedSmoothing.certify, []
    monkeypatch.setattr(RandomizedSmoothing, "certify", lambda *a, **k: calls.append(1) or certify_once(*a, **k))
    certify_command.main([str(copy), f"--attacks=[{EOT_ATTACK}]", "--budgets={waveform_snr: [20]}", "--noprogressbar"])
    assert calls == []
    assert (copy / "certificates.csv").read_text() == (run / "certificates.csv").read_text()
    attacked = read_csv(copy / "smoothed_attack.csv")
    assert [r["attack"] for r in attacked] == ["WaveformAPGD-CE", "robust"]
    assert not (copy / "smoothed_attack_progress_test.json").exists()
    # The entry keeps the attack's outcome beside the certificates.
    ((result,),) = [entry["results"] for entry in read_entries(copy / "certified")]
    assert (
        result["budget"] == 20
        and f"{result['robust_UAR_under_attack']:.6f}" == f"{float(attacked[1]['UAR_worst_so_far']):.6f}"
    )


def test_certify_names_a_folder_without_a_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ser_adv_brain.commands.certify", str(tmp_path)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "is not a training output folder" in done.stderr
