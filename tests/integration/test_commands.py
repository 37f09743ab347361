"""The command-line tool: ``ser-adv`` and its subcommands, the tiers, the benchmark end to end, the leaderboard.

The benchmark runs the EmoDB recipe as a user types it, on the 42 sample clips (4 speaker folds), two
trainings on two folds at ``TINY`` size, evaluated in the quick tier.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import (
    EMODB_SAMPLES,
    RECIPE_HPARAMS_FILES,
    REPO_ROOT,
    TINY,
    flags,
    load_hparams,
    markdown_rows,
    subprocess_env,
    takes_waveform_file,
    tiny,
)

from ser_adv_brain.commands.cli import SUBCOMMANDS
from ser_adv_brain.evaluation.suite import suite_entries, suite_plan
from ser_adv_brain.evaluation.tiers import TIERS, tier_attacks, tier_budgets
from ser_adv_brain.reports.entry import hardware, read_entries
from ser_adv_brain.tables import read_csv

CLI = [sys.executable, "-m", "ser_adv_brain.commands.cli"]


def run(args, cwd=REPO_ROOT, check=True):
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=900
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done


def test_ser_adv_is_the_installed_console_script():
    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "ser-adv"]
    assert script.value == "ser_adv_brain.commands.cli:main"


def test_every_subcommand_answers_help_from_outside_a_checkout(tmp_path):
    listing = run([*CLI, "--help"], cwd=tmp_path).stdout
    for name in SUBCOMMANDS:
        assert f"ser-adv {name}" in listing
        assert f"usage: ser-adv {name}" in run([*CLI, name, "--help"], cwd=tmp_path).stdout
    unknown = run([*CLI, "evaluat"], check=False)
    assert unknown.returncode != 0 and "unknown subcommand 'evaluat'" in unknown.stderr


@pytest.mark.parametrize("alias", ["evaluate_robustness", "transfer", "targeted_success", "train_detector", "sweep"])
def test_the_python_m_commands_of_before_still_run(alias, tmp_path):
    """Each old module runs its subcommand: given a folder without a run, it says so as the subcommand does."""
    if alias == "sweep":
        assert "usage: ser-adv sweep" in run([sys.executable, "-m", f"ser_adv_brain.{alias}", "--help"]).stdout
        return
    args = [tmp_path] * (2 if alias == "transfer" else 1) + (
        ["hparams/detector.yaml"] if alias == "train_detector" else []
    )
    done = run([sys.executable, "-m", f"ser_adv_brain.{alias}", *args], check=False)
    assert done.returncode != 0 and "is not a training output folder" in done.stderr


def test_the_quick_tier_is_the_suite_every_recipe_ends_with():
    """Its waveform attacks, for a model that takes the waveform (loaded with its tiny encoder: no download)."""
    for hparams_file in RECIPE_HPARAMS_FILES:
        waveform = takes_waveform_file(hparams_file)
        offline = {"encoder_source": tiny(hparams_file)["encoder_source"]} if waveform else {}
        suite = load_hparams(hparams_file, "--data_folder=unused", **offline)["attack_suite"]
        quick = tier_attacks("quick", domain="waveform" if waveform else None)
        assert [repr(attack) for attack in suite] == [repr(attack) for attack in quick], hparams_file


def test_the_standard_tier_is_autoattacks_composition():
    assert [attack.name for attack in tier_attacks("standard")] == [
        "APGD-CE",
        "APGD-T",
        "FGSM",
        "SquareAttack",
        "WaveformAPGD-CE",
        "WaveformAPGD-T",
    ]
    square = next(attack for attack in tier_attacks("standard") if attack.name == "SquareAttack")
    assert square.max_queries == 5000 and all(a.targets == 9 for a in tier_attacks("standard") if a.name.endswith("-T"))
    assert all(attack.eot_iter == 20 for attack in tier_attacks("rand"))
    assert set(TIERS) == {"quick", "standard", "rand", "audio"}


@pytest.mark.parametrize("tier", TIERS)
def test_a_tiers_budgets_are_of_the_threat_models_its_attacks_perturb(tier, tmp_path):
    """A budget of no attack's threat model would be a row of the tier's table that nothing measures."""
    attacks = tier_attacks(tier, output_folder=tmp_path)
    assert set(yaml.safe_load(tier_budgets(tier))) == {attack.threat_model for attack in attacks}


def test_the_audio_tier_attacks_the_threat_models_of_the_waveform_the_standard_tier_lacks(tmp_path):
    attacks = tier_attacks("audio", output_folder=tmp_path, sample_rate=8000)
    assert [(a.name, a.threat_model) for a in attacks] == [
        ("Universal", "waveform_universal"),
        ("OverTheAirPGD-10", "waveform_room_snr"),
    ]
    rooms = attacks[-1].rooms
    assert (rooms.folder, rooms.settings["sample_rate"]) == (str(tmp_path / "rooms"), 8000)
    plan = suite_plan(suite_entries(attacks), yaml.safe_load(tier_budgets("audio")))
    assert {(step.group, step.budget) for step in plan} == {
        (threat, budget) for threat in ("waveform_universal", "waveform_room_snr") for budget in (40.0, 30.0, 20.0)
    }


def test_a_benchmark_every_run_of_which_would_fail_is_refused_before_any_starts(tmp_path):
    # A data folder that is not one, and folds beyond the yaml's n_folds (5 for EmoDB), fail every run they reach.
    every_fold = [*CLI, "benchmark", "recipes/EmoDB", f"--output_folder={tmp_path / 'bench'}"]
    command = [*every_fold, "--folds", "0", "5"]
    done = run([*command, f"--data_folder={tmp_path / 'wav'}"], check=False)
    assert done.returncode != 0
    assert f"--data_folder={tmp_path / 'wav'} is not a folder" in done.stderr
    assert "every yaml of the grid has n_folds: 5 (folds 0 to 4), not fold(s) [5]" in done.stderr
    assert not (tmp_path / "bench").exists()
    # --n_folds is read from the command line, as the runs would read it; --report_only starts nothing, checks nothing.
    with_six = run([*command, f"--data_folder={tmp_path / 'wav'}", "--n_folds=6"], check=False).stderr
    assert "is not a folder" in with_six and "not fold(s)" not in with_six
    report_only = [*every_fold, f"--data_folder={tmp_path / 'wav'}", "--report_only"]
    assert run(report_only).returncode == 0
    # There --folds (or --seeds) would not narrow the report, which is the folder's: refused rather than ignored.
    for option in (["--folds", "3"], ["--seeds", "2"]):
        refused = run([*report_only, *option], check=False)
        assert refused.returncode != 0 and "--folds and --seeds are not read" in refused.stderr
    # Budgets that miss a threat model of the tier would fail every evaluation after the trainings.
    done = run([*command, f"--data_folder={EMODB_SAMPLES}", "--budgets={features_linf: [0.02]}"], check=False)
    assert "but the standard tier's attacks perturb ['features_linf', 'waveform_snr']" in done.stderr
    assert not (tmp_path / "bench").exists()
    # A model that takes the waveform is attacked on its waveform only: in one table with models of the features,
    # it would lack their rows.
    ssl = [*CLI, "benchmark", "recipes/EmoDB", f"--output_folder={tmp_path / 'bench'}", "--trainings", "cnn4_single"]
    ssl += ["wav2vec2_single", f"--data_folder={EMODB_SAMPLES}"]
    done = run(ssl, check=False)
    assert "wav2vec2_single take(s) the waveform, and the standard tier attacks only its waveform" in done.stderr
    assert "cnn4_single are attacked on the log-Mel features too" in done.stderr and not (tmp_path / "bench").exists()
    # Its budgets are the waveform's.
    alone = [arg for arg in ssl if arg != "cnn4_single"]
    done = run([*alone, "--budgets={features_linf: [0.02]}"], check=False)
    assert "but the standard tier's attacks perturb ['waveform_snr'] (the waveform" in done.stderr
    assert not (tmp_path / "bench").exists()


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    """Two trainings x two folds of the EmoDB recipe on the sample clips, quick tier, then the same command again."""
    out = tmp_path_factory.mktemp("benchmark") / "bench"
    sizes = {**TINY, "number_of_epochs": 1, "n_folds": 4, "warmup_steps": 1}
    command = [
        *CLI,
        "benchmark",
        "recipes/EmoDB",
        "--trainings",
        "cnn4_single",
        "cnn4_vanilla",
        "--folds",
        "0",
        "1",
        "--tier=quick",
        "--budgets={features_linf: [0.05, 0.1], waveform_snr: [20]}",
        f"--output_folder={out}",
        f"--data_folder={EMODB_SAMPLES}",
        *flags(**sizes),
        "--noprogressbar",
    ]
    first = run(command)
    again = run(command)
    return {"out": out, "first": first.stderr, "again": again.stderr, "command": command}


def test_the_benchmark_trains_and_evaluates_fold_by_fold_and_resumes(benchmark_run):
    out, log = benchmark_run["out"], benchmark_run["first"]
    order = [line.split(" - ")[1].split(":")[0] for line in log.splitlines() if line.endswith(": started")]
    assert order == [
        "cnn4_single/fold0-seed1234",
        "cnn4_vanilla/fold0-seed1234",
        "cnn4_single/fold0-seed1234 (quick tier)",
        "cnn4_vanilla/fold0-seed1234 (quick tier)",
        "cnn4_single/fold1-seed1234",
        "cnn4_vanilla/fold1-seed1234",
        "cnn4_single/fold1-seed1234 (quick tier)",
        "cnn4_vanilla/fold1-seed1234 (quick tier)",
    ]
    # Evaluated runs are done: their trainings are not even looked at, their evaluations skipped.
    assert ": started" not in benchmark_run["again"] and benchmark_run["again"].count("done, skipped") == 4
    assert "4 already trained, 4 already evaluated in the quick tier" in benchmark_run["again"]
    # Each run's split is its fold's: fold 1 tests speakers 09 and 10 (dev: the next fold, 11).
    split = {r["spk_id"]: r["split"] for r in read_csv(out / "cnn4_single" / "fold1-seed1234" / "speaker_split.csv")}
    assert sorted(s for s, role in split.items() if role == "test") == ["09", "10"]


def command_into(benchmark_run, folder):
    """The fixture's benchmark command, writing into ``folder``."""
    return [f"--output_folder={folder}" if p.startswith("--output_folder") else p for p in benchmark_run["command"]]


def tier_entries(folder, tier="quick"):
    return [entry for entry in read_entries(folder) if entry["tier"] == tier]


def test_every_entry_is_its_runs_own_report(benchmark_run):
    # Each run keeps the entry of the suite it ended with (tier "yaml") beside its tier's.
    own = tier_entries(benchmark_run["out"], "yaml")
    assert sorted(os.path.dirname(e["path"]) for e in own) == sorted(
        str(benchmark_run["out"] / t / f"fold{f}-seed1234") for t in ("cnn4_single", "cnn4_vanilla") for f in (0, 1)
    )
    entries = tier_entries(benchmark_run["out"])
    assert sorted((e["name"], e["fold"]) for e in entries) == [
        (t, f) for t in ("cnn4_single", "cnn4_vanilla") for f in (0, 1)
    ]
    for entry in entries:
        folder = os.path.dirname(entry["path"])
        assert (entry["corpus"], entry["protocol"], entry["tier"], entry["split"]) == (
            "EmoDB",
            {"kind": "speaker folds", "n_folds": 4},
            "quick",
            "test",
        )
        suite = {
            (r["threat_model"], float(r["budget"])): float(r["UAR_worst_so_far"])
            for r in read_csv(os.path.join(folder, "attack_suite.csv"))
            if r["attack"] == "robust"
        }
        assert {(r["threat_model"], r["budget"]): r["robust_UAR"] for r in entry["results"]} == suite
        assert entry["utterances"] == len(entry["per_utterance"]) == 14
        assert entry["training"]["yaml"] == f"{entry['name']}.yaml"
        assert entry["attacks"] == ["FGSM", "PGD-10", "SquareAttack", "WaveformPGD-10"]
        # Passes are counted per budget; a larger budget may need none (every utterance fooled at a smaller one).
        assert all(r["forward_passes_per_utterance"] >= 0 for r in entry["results"])
        assert (entry["results"][0]["forward_passes_per_utterance"] > 0) == (entry["clean_UAR"] > 0)
        assert entry["hardware"] == hardware("cpu")  # the evaluations ran with this process's variables


def test_an_entry_names_the_cpu_kernels_that_computed_it():
    """Another host's kernels give other floats: the entry says which ones made it, capped ones included."""
    code = "import json; from ser_adv_brain.reports.entry import hardware; print(json.dumps(hardware('cpu')))"
    env = {**subprocess_env(), "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    env.pop("MKL_ENABLE_INSTRUCTIONS", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {
        "device": "cpu",
        "cpu_kernels": "DEFAULT",
        "kernel_limits": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    }


def test_the_benchmark_report_figure_and_leaderboard(benchmark_run, tmp_path):
    out = benchmark_run["out"] / "quick"  # the tier's reports
    report = (out / "benchmark.md").read_text()
    rows = markdown_rows(report)
    assert rows[0] == [
        "training",
        "real data",
        "robust, features_linf 0.05",
        "robust, features_linf 0.1",
        "robust, 20 dB (waveform_snr)",
    ]
    assert [row[0] for row in rows[1:3]] == ["cnn4_single", "cnn4_vanilla"]
    assert "The attack works" in report and "Adversarial training helps" not in report  # no similarity run
    folds = read_csv(out / "benchmark_folds.csv")
    assert len(folds) == 4 and os.path.getsize(out / "benchmark.png") > 5000
    assert "#### features_linf at 0.05" in (out / "leaderboard.md").read_text()
    # The installed console script exits 0 after a subcommand that returns its results to Python callers.
    run([shutil.which("ser-adv"), "leaderboard", out.parent, "--tier=quick", f"--output_folder={tmp_path}"])
    assert (tmp_path / "leaderboard.md").read_text() == (out / "leaderboard.md").read_text()


def test_a_benchmark_of_fewer_trainings_and_folds_keeps_the_folders_whole_report(benchmark_run, tmp_path):
    """The folder's report aggregated again by a command for one training on one fold: still both trainings on
    both folds, not the smaller report of what the command named, the command's training first."""
    folder = tmp_path / "bench"  # a copy: the other tests read the fixture's report
    shutil.copytree(benchmark_run["out"], folder)
    out = folder / "quick"
    folds = read_csv(out / "benchmark_folds.csv")
    command = command_into(benchmark_run, folder)
    command.remove("cnn4_single")
    command.remove("1")  # of --folds 0 1
    run(command)  # every run trained and evaluated already: it only aggregates
    assert sorted(map(str, read_csv(out / "benchmark_folds.csv"))) == sorted(map(str, folds))
    assert [row[0] for row in markdown_rows((out / "benchmark.md").read_text())[1:3]] == ["cnn4_vanilla", "cnn4_single"]


def test_a_benchmark_resumes_from_its_entries_alone(benchmark_run, tmp_path):
    """Entries copied from the machines that made them, without the trained models: nothing is trained or
    evaluated again, and the report is the one those machines' folder gave."""
    folder = tmp_path / "bench"
    for entry in tier_entries(benchmark_run["out"]):
        copy = folder / os.path.relpath(entry["path"], benchmark_run["out"])
        os.makedirs(copy.parent)
        shutil.copy(entry["path"], copy)
    command = command_into(benchmark_run, folder)
    done = run(command)
    assert ": started" not in done.stderr and "0 already trained, 4 already evaluated" in done.stderr
    report = (folder / "quick" / "benchmark.md").read_text()
    assert report == (benchmark_run["out"] / "quick" / "benchmark.md").read_text()


def test_a_benchmark_asked_for_other_budgets_than_its_evaluations_is_refused(benchmark_run, tmp_path):
    """Its evaluations would be skipped as done, and the report would give their budgets, not the ones asked for."""
    folder = tmp_path / "bench"
    shutil.copytree(benchmark_run["out"], folder)
    entries = {path: path.read_bytes() for path in folder.rglob("entry.json")}
    command = command_into(benchmark_run, folder)
    other = "--budgets={features_linf: [0.05, 0.2], waveform_snr: [20]}"
    done = run([other if p.startswith("--budgets") else p for p in command], check=False)
    assert done.returncode != 0 and "already evaluated in the quick tier at other budgets" in done.stderr
    assert all(f"{t}/fold{f}-seed1234" in done.stderr for t in ("cnn4_single", "cnn4_vanilla") for f in (0, 1))
    assert ": started" not in done.stderr and {path: path.read_bytes() for path in entries} == entries


def test_the_leaderboard_command_refuses_mixed_tiers_and_names_a_model_missing_folds(benchmark_run, tmp_path):
    entries = tmp_path / "entries"
    for index, entry in enumerate(tier_entries(benchmark_run["out"])):
        os.makedirs(entries / str(index))
        entry = {key: value for key, value in entry.items() if key != "path"}
        if index == 3:
            entry["tier"] = "standard"
        (entries / str(index) / "entry.json").write_text(json.dumps(entry))
    done = run([*CLI, "leaderboard", entries], check=False)
    assert done.returncode != 0 and "the tiers ['quick', 'standard']; choose one with --tier" in done.stderr
    # Without entry 3, cnn4_vanilla lacks fold 1: named, not ranked; single training is ranked.
    run([*CLI, "leaderboard", entries, "--tier=quick", f"--output_folder={tmp_path / 'board'}"])
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "Not ranked, evaluated on fewer folds and seeds than the models ranked: cnn4_vanilla (fold 0, seed" in board
    assert {row["name"] for row in read_csv(tmp_path / "board" / "leaderboard.csv")} == {"cnn4_single"}


def test_evaluate_in_a_tier_writes_into_its_own_folder(benchmark_run):
    run_folder = benchmark_run["out"] / "cnn4_single" / "fold0-seed1234"
    before = (run_folder / "attack_suite.csv").read_text()
    run(
        [
            *CLI,
            "evaluate",
            run_folder,
            "--tier=quick",
            "--splits=test",
            "--budgets={features_linf: [0.05], waveform_snr: [20]}",
            f"--output_folder={run_folder / 'quick_again'}",
            "--noprogressbar",
        ]
    )
    (entry,) = read_entries(run_folder / "quick_again")
    assert [(r["threat_model"], r["budget"]) for r in entry["results"]] == [
        ("features_linf", 0.05),
        ("waveform_snr", 20),
    ]
    assert (run_folder / "attack_suite.csv").read_text() == before  # the run's own report is left alone
    # Without --budgets, a tier's own (the audio tier's: threat models the run's yaml has no budgets for).
    run([*CLI, "evaluate", run_folder, "--tier=audio", "--splits=test", "--noprogressbar"])
    (entry,) = read_entries(run_folder / "audio")
    assert {(r["threat_model"], r["budget"]) for r in entry["results"]} == {
        (threat, budget) for threat, budgets in yaml.safe_load(tier_budgets("audio")).items() for budget in budgets
    }
    assert entry["tier"] == "audio" and (run_folder / "rooms" / "rooms.csv").is_file()
    (over_the_air,) = {r["threat_model"] for r in entry["results"] if "robust_UAR_heard_directly" in r}
    assert over_the_air == "waveform_room_snr" and "over_the_air" in entry["per_utterance"][0]
    # Its universal perturbations are checked against a per-utterance attack all the same (the quick tier's).
    assert "Not checked: universal" not in (run_folder / "audio" / "robustness.md").read_text()
    # --budgets replaces the run's suite_budgets as a whole: the run's waveform budgets are not kept.
    done = run(
        [
            *CLI,
            "evaluate",
            run_folder,
            "--tier=quick",
            "--budgets={features_linf: [0.05]}",
            f"--output_folder={run_folder / 'no_snr'}",
        ],
        check=False,
    )
    assert done.returncode != 0 and "--budgets: suite_budgets has no budgets for 'waveform_snr'" in done.stderr
    assert not (run_folder / "no_snr").exists()
    # Budgets for a threat model no attack of the suite perturbs (a typo, most likely) are refused as early.
    budgets = "--budgets={features_linf: [0.05], waveform_snr: [20], feature_linf: [0.1]}"
    done = run(
        [*CLI, "evaluate", run_folder, "--tier=quick", budgets, f"--output_folder={run_folder / 'typo'}"], check=False
    )
    assert done.returncode != 0 and "--budgets: no attack of the suite perturbs ['feature_linf']" in done.stderr
    assert not (run_folder / "typo").exists()


def test_a_benchmark_of_a_self_supervised_model_attacks_its_waveform(tmp_path):
    """A model that takes the waveform has no features: the benchmark's evaluation, and ``ser-adv evaluate --tier``
    without ``--budgets``, run the tier's waveform attacks at the tier's waveform budgets."""
    out = tmp_path / "bench"
    sizes = {"n_folds": 4, "n_frames": 32, "batch_size": 4, "number_of_epochs": 1}
    encoder = REPO_ROOT / "tests" / "samples" / "ssl" / "wav2vec2"
    command = [*CLI, "benchmark", "recipes/EmoDB", "--trainings", "wav2vec2_single", "--folds", "0", "--tier=quick"]
    command += [f"--output_folder={out}", f"--data_folder={EMODB_SAMPLES}", f"--encoder_source={encoder}"]
    run([*command, *flags(**sizes), "--noprogressbar"])
    waveform = yaml.safe_load(tier_budgets("quick", domain="waveform"))
    expected = [(threat, budget) for threat, budgets in waveform.items() for budget in sorted(budgets, reverse=True)]
    (entry,) = tier_entries(out)
    assert [(r["threat_model"], r["budget"]) for r in entry["results"]] == expected
    assert entry["attacks"] == sorted(attack.name for attack in tier_attacks("quick", domain="waveform"))
    assert "wav2vec2_single" in (out / "quick" / "benchmark.md").read_text()
    run_folder = out / "wav2vec2_single" / "fold0-seed1234"
    run([*CLI, "evaluate", run_folder, "--tier=quick", "--splits=test", f"--output_folder={tmp_path / 'again'}"])
    (again,) = read_entries(tmp_path / "again")
    assert [(r["threat_model"], r["budget"]) for r in again["results"]] == expected
