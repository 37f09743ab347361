"""``ser-adv benchmark``: trainings x speaker folds x seeds, each trained, evaluated in a tier, then aggregated.

Usage (from a checkout's root; every option it does not know goes to each run's ``train.py``, a yaml key
only to the runs whose yaml has it):

    ser-adv benchmark recipes/EmoDB --data_folder=/path/to/emodb/wav --base_channels=16
    ser-adv benchmark recipes/EmoDB --trainings cnn4_single cnn4_trades --folds 0 1 --tier=quick \\
        --data_folder=/path/to/emodb/wav --base_channels=16 --gpus 0 1
    ser-adv benchmark recipes/EmoDB --data_folder=/path/to/emodb/wav --base_channels=16 --jobs 2

1. Trains every run: ``python <recipe>/train.py <hparams>/<training>.yaml --fold=<k> --seed=<s>
   --output_folder=<output_folder>/<training>/fold<k>-seed<s> <your options>``, resumable as the sweep's
   (``ser_adv_brain.commands.grid``); folds are speaker folds (``ser_adv_brain.data.manifests.fold_split``).
2. Evaluates every trained run on its test split in the tier (``--tier``: ``standard`` by default,
   AutoAttack's composition; ``audio`` for the threats to the audio path; ``ser_adv_brain.evaluation.tiers``)
   at ``--budgets`` (default: the tier's):
   ``ser-adv evaluate <run> --tier=<tier> --splits=test``, into ``<run>/<tier>/``, which holds the run's
   benchmark entry ``entry.json``. An evaluation already done is skipped, and its run is not trained again: a
   folder of entries alone (copied from the machines that made them) resumes a benchmark.
3. From the entries, into ``<output_folder>/<tier>/`` (the same runs in another tier are a benchmark of
   their own): ``benchmark.md`` (the table of every training's real and robust UAR with 95% intervals, the
   paired comparisons of every training with ``--baseline``, and the paper's three findings as held, not
   held or not decidable), ``benchmark.csv`` and ``benchmark.png`` (UAR against the budget with interval
   bands), ``benchmark_folds.csv`` (every run's figures) and the leaderboard (``leaderboard.md``,
   ``leaderboard.csv``); see ``ser_adv_brain.reports.benchmark_report``.

The report is of the folder: the trainings asked for on the folds and seeds all of them have, and every
other training evaluated there in the tier on all of these (a command for fewer trainings or folds keeps
the folder's whole report); a training evaluated on fewer of them, or otherwise, is left out and named.
``--report_only`` trains and evaluates nothing: it aggregates the evaluations done so far, and
``--trainings`` names their entries (the yaml files are not read; ``--folds`` and ``--seeds``, which would
not narrow the report, are refused). Smoothed classifiers are aggregated so:
``ser-adv certify`` writes each run's entry of the ``certified`` tier (``<run>/certified/entry.json``,
named ``<experiment>_sigma<sigma>``), and ``--report_only --tier=certified --trainings <those names>``
gives certified UAR, and UAR under the adaptive attack, with intervals over the folds.
"""

import logging
import os
import sys

from ser_adv_brain.commands.arguments import parser_for, yaml_budgets
from ser_adv_brain.commands.grid import (
    GridRun,
    Job,
    add_grid_options,
    check_grid_options,
    override_problems,
    replicates,
    run_grid,
    run_jobs,
    yaml_model_takes_waveform,
)
from ser_adv_brain.evaluation.tiers import TIERS, tier_budget_grid, tier_budgets
from ser_adv_brain.reports.benchmark_report import REAL, write_benchmark_report
from ser_adv_brain.reports.entry import CERTIFIED_TIER, ENTRY_FILE, read_entries, result_key
from ser_adv_brain.reports.leaderboard import check_evaluated_alike, replicates_of, write_leaderboard
from ser_adv_brain.reports.plots import plot_benchmark

logger = logging.getLogger(__name__)

# The eight trainings: single, the paper's two noise baselines and two defences, and PGD, TRADES and fast training.
TRAININGS = ("single", "raw_noise", "logmel_noise", "vanilla", "similarity", "pgd", "trades", "fast")


def plan_benchmark(hparams_dir, output_folder, trainings, folds, seeds):
    """The runs, fold by fold (a partial benchmark holds whole folds); every missing yaml is named before any run."""
    files = {training: os.path.join(hparams_dir, f"{training}.yaml") for training in trainings}
    missing = [path for path in files.values() if not os.path.isfile(path)]
    if missing:
        have = (
            sorted(f[: -len(".yaml")] for f in os.listdir(hparams_dir) if f.endswith(".yaml"))
            if os.path.isdir(hparams_dir)
            else []
        )
        raise FileNotFoundError(f"No yaml for {', '.join(missing)} (--trainings); {hparams_dir} has {have}.")
    return [
        GridRun(training, files[training], output_folder, replicate=replicate)
        for replicate in replicates(seeds=seeds, folds=folds)
        for training in trainings
    ]


def tier_domain(runs, tier):
    """The input ``tier`` attacks for these runs' models: None (all of its threat models) for models of the
    log-Mel features, ``"waveform"`` (its waveform threat models only, ``ser-adv evaluate --tier``) for models
    that take the waveform. A ``ValueError`` naming the trainings of each kind where they are mixed in a tier
    that attacks the features: one table compares models attacked in the same threat models."""
    if not tier_budget_grid(tier, "features"):
        return None
    files = {run.name: run.hparams_file for run in runs}  # each yaml read once, not once per fold and seed
    waveform = sorted(name for name, hparams_file in files.items() if yaml_model_takes_waveform(hparams_file))
    if not waveform:
        return None
    features = sorted(set(files) - set(waveform))
    if features:
        raise ValueError(
            f"{', '.join(waveform)} take(s) the waveform, and the {tier} tier attacks only its waveform, while "
            f"{', '.join(features)} are attacked on the log-Mel features too: one table compares models attacked "
            "in the same threat models, so benchmark each kind into its own --output_folder"
        )
    return "waveform"


def evaluation_job(run, tier, budgets, device_options):
    """The job that evaluates a trained run's test split in ``tier`` into ``<run>/<tier>``."""
    folder = os.path.join(run.folder, tier)
    command = (
        sys.executable,
        "-m",
        "ser_adv_brain.commands.evaluate",
        run.folder,
        f"--tier={tier}",
        "--splits=test",
        f"--budgets={budgets}",
        "--noprogressbar",
        *device_options,
    )
    return Job(
        f"{run.label} ({tier} tier)",
        command,
        os.path.join(folder, ENTRY_FILE),
        os.path.join(folder, "evaluate_log.txt"),
        tuple(run.replicate.environment.items()),
    )


def evaluated_otherwise(runs, tier, budgets):
    """The runs whose evaluation in ``tier`` is done at other budgets than ``budgets`` (threat model -> list), as
    sentences ``"<their budgets>: <runs>"``: the benchmark would skip them as done and report their budgets."""
    asked = {(threat, float(budget)) for threat, values in budgets.items() for budget in values}
    by_budgets = {}
    for run in runs:
        for entry in read_entries(os.path.join(run.folder, tier)):
            done = {(result["threat_model"], float(result["budget"])) for result in entry["results"]}
            if done != asked:
                by_budgets.setdefault(", ".join(f"{t} {b:g}" for t, b in sorted(done)), []).append(run.label)
    return [f"{done} in {', '.join(labels)}" for done, labels in by_budgets.items()]


def benchmark_entries(output_folder, tier):
    """Every entry of a ``tier`` evaluation in the benchmark's folder (``<training>/<run>/<tier>/entry.json``),
    whichever benchmark command made it."""
    return [
        entry
        for entry in read_entries(output_folder)
        if os.path.basename(os.path.dirname(entry["path"])) == tier and entry["tier"] == tier
    ]


def complete_entries(entries, trainings):
    """The entries to aggregate: those of ``trainings`` on the folds and seeds every one of them has, then those
    of any other training of the folder evaluated alike on all of these, so that a command with fewer trainings
    or folds aggregates the folder's evaluations and never leaves a smaller report in place of a larger one."""
    done_by = replicates_of(entries)
    asked = [done_by[training] for training in trainings if training in done_by]
    if not asked:
        return []
    everyone = set.intersection(*asked)
    first = next(entry for entry in entries if entry["name"] in trainings)
    kept = {name for name, done in done_by.items() if everyone <= done}
    for name in sorted(kept - set(trainings)):
        try:
            check_evaluated_alike([first, *(entry for entry in entries if entry["name"] == name)])
        except ValueError as error:
            kept.discard(name)
            logger.warning(f"{name} is left out of the report: {error}")
    behind = sorted(set(done_by) - kept - set(trainings))
    if behind:
        logger.warning(
            f"{behind} are left out of the report: not evaluated on all of its {len(everyone)} folds and seeds."
        )
    ahead = sorted(name for name in kept if done_by[name] != everyone)
    if ahead:
        logger.warning(f"Aggregated on the {len(everyone)} fold-and-seed runs every training has; {ahead} have more.")
    order = {name: index for index, name in enumerate([*trainings, *sorted(kept - set(trainings))])}
    kept_entries = [entry for entry in entries if entry["name"] in kept and (entry["fold"], entry["seed"]) in everyone]
    return sorted(kept_entries, key=lambda entry: order[entry["name"]])  # the table's rows in the command's order


def papers_training(trainings, kind):
    """The benchmarked training of the paper's ``kind`` (single, vanilla, similarity): the recipes name it
    ``<model>_<kind>``; ``cnn4_waveform_vanilla`` trains against another attack than the paper's FGSM.

    Example
    -------
    >>> papers_training(["cnn4_waveform_vanilla", "cnn4_vanilla"], "vanilla")
    'cnn4_vanilla'
    >>> papers_training(["cnn4_single", "cnn4_waveform_vanilla"], "vanilla") is None
    True
    """
    return next((t for t in trainings if t.count("_") == 1 and t.endswith(f"_{kind}")), None)


def paper_findings(trainings, fgsm_key):
    """The paper's three findings as claims on the benchmark's figures (skipped where a training is not benchmarked)."""
    single, vanilla, similarity = (papers_training(trainings, kind) for kind in ("single", "vanilla", "similarity"))
    findings = []
    if single:
        findings.append(("The attack works: robust UAR falls below real-data UAR", single, single, REAL, fgsm_key, 1))
    if single and vanilla and similarity:
        findings += [
            (
                "Adversarial training helps: vanilla keeps more robust UAR than single training",
                vanilla,
                single,
                fgsm_key,
                fgsm_key,
                1,
            ),
            (
                "Adversarial training helps: similarity keeps more robust UAR than single training",
                similarity,
                single,
                fgsm_key,
                fgsm_key,
                1,
            ),
            (
                "Similarity-based training is the better defence on fake data",
                similarity,
                vanilla,
                fgsm_key,
                fgsm_key,
                1,
            ),
            (
                "Vanilla training keeps more real-data UAR than similarity-based training",
                vanilla,
                similarity,
                REAL,
                REAL,
                1,
            ),
        ]
    return findings


def findings_of(entries, trainings):
    """The paper's findings, about attacks on the features (FGSM, Linf), at the tier's first Linf budget on the
    features; none for a tier without one (the audio tier)."""
    features = next((r for r in entries[0]["results"] if r["threat_model"] == "features_linf"), None)
    return paper_findings(trainings, result_key("features_linf", features["budget"])) if features else []


def aggregate(folder, trainings, tier, output_folder, title, baseline):
    """Writes the benchmark's report, figure and leaderboard from the evaluations done in ``folder``
    (``complete_entries``); returns the report."""
    found = benchmark_entries(folder, tier)
    missing = [training for training in trainings if not any(entry["name"] == training for entry in found)]
    if missing:
        logger.warning(f"No entry of the {tier} tier in {folder} for {', '.join(missing)}.")
    entries = complete_entries(found, trainings)
    if not entries:
        logger.warning("No evaluation done yet: nothing to aggregate.")
        return None
    os.makedirs(output_folder, exist_ok=True)
    trainings = list(dict.fromkeys(entry["name"] for entry in entries))
    findings = findings_of(entries, trainings)
    pairs = [(a, b, key) for _, a, b, key, key_b, _ in findings if key == key_b and b != baseline]
    report = write_benchmark_report(
        entries, output_folder, title, baseline if baseline in trainings else trainings[0], pairs, findings
    )
    plot_benchmark(os.path.join(output_folder, "benchmark.csv"))
    write_leaderboard(entries, output_folder)
    return report


def parse_arguments(argv):
    parser = parser_for("benchmark", __doc__)
    add_grid_options(parser, "results/<recipe name>_benchmark")
    parser.add_argument(
        "--trainings", nargs="+", default=None, help="yaml names in the recipe's hparams (default: cnn4_ + the eight)"
    )
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="speaker folds (default: all 5)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: 1234)")
    parser.add_argument(
        "--tier",
        choices=[*TIERS, CERTIFIED_TIER],
        default="standard",
        help="the attack tier (default standard); certified: aggregate ser-adv certify's entries (--report_only)",
    )
    parser.add_argument(
        "--budgets",
        default=None,
        help="the evaluation's budgets, a yaml mapping (default: the tier's; see ser-adv evaluate --budgets)",
    )
    parser.add_argument(
        "--baseline", default=None, help="the training every other is compared with (default: cnn4_single)"
    )
    parser.add_argument("--report_only", action="store_true", help="train and evaluate nothing: aggregate what is done")
    args, overrides = parser.parse_known_args(argv)
    train_script = check_grid_options(parser, args, overrides, {"--fold": "--folds", "--seed": "--seeds"}, "_benchmark")
    args.trainings = args.trainings or [f"cnn4_{training}" for training in TRAININGS]
    args.baseline = args.baseline or next((t for t in args.trainings if t.endswith("_single")), args.trainings[0])
    if args.report_only and (args.folds or args.seeds):
        # The report is the folder's (complete_entries): it is never narrowed to fewer folds than it holds.
        parser.error(
            "--report_only aggregates every fold and seed that all the trainings named have, so --folds and "
            "--seeds are not read: to report fewer, copy their entries into a folder of their own"
        )
    args.folds, args.seeds = args.folds or [0, 1, 2, 3, 4], args.seeds or [1234]
    if args.tier == CERTIFIED_TIER and not args.report_only:
        parser.error(
            "the certified tier's entries are made by ser-adv certify RUN (docs/defences.md); aggregate them "
            "with --report_only"
        )
    return args, train_script, overrides


def budget_problem(args, domain):
    """Sets ``args.budgets`` (default: the tier's on ``domain``) and ``args.budget_grid``; a sentence where they
    miss a threat model the tier's attacks perturb on ``domain`` or name another: checked here, not by each
    evaluation after hours of training."""
    args.budgets = args.budgets or tier_budgets(args.tier, domain)
    args.budget_grid = yaml_budgets(args.budgets, "--budgets")
    perturbed = sorted(tier_budget_grid(args.tier, domain))
    if sorted(args.budget_grid) != perturbed:
        return (
            f"--budgets gives {sorted(args.budget_grid)}, but the {args.tier} tier's attacks perturb {perturbed}"
            f"{' (the waveform: the trainings take it)' if domain else ''}: give budgets for each of those"
        )
    return None


def main(argv=None):
    """Trains, evaluates and aggregates the benchmark; exits 1 if a run or an evaluation failed."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    args, train_script, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
    # With --report_only nothing runs: --trainings names entries, which need no yaml.
    runs = (
        []
        if args.report_only
        else plan_benchmark(args.hparams_dir, args.output_folder, args.trainings, args.folds, args.seeds)
    )
    problems = [] if args.report_only else override_problems(runs, overrides)
    domain = None
    if not args.report_only:
        try:
            domain = tier_domain(runs, args.tier)
        except ValueError as error:
            problems.append(str(error))
        problem = budget_problem(args, domain)
        if problem:
            problems.append(problem)
    otherwise = [] if args.report_only else evaluated_otherwise(runs, args.tier, args.budget_grid)
    if otherwise:
        problems.append(
            f"already evaluated in the {args.tier} tier at other budgets than {args.budgets}: {'; '.join(otherwise)} "
            "(give another --output_folder, or move those evaluations away to evaluate again)"
        )
    if problems:
        sys.exit(f"benchmark: {'; '.join(problems)}. No run was started.")
    failed = []
    if not args.report_only:
        devices = [option for option in overrides if option.startswith("--device=")]
        evaluations = {run: evaluation_job(run, args.tier, args.budgets, devices) for run in runs}
        logger.info(
            f"{len(runs)} runs in {args.output_folder}, {sum(run.finished for run in runs)} already trained, "
            f"{sum(job.done for job in evaluations.values())} already evaluated in the {args.tier} tier"
        )
        # Fold by fold, trained then evaluated: a partial benchmark already holds whole folds.
        for replicate in dict.fromkeys(run.replicate for run in runs):
            group = [run for run in runs if run.replicate == replicate]
            # A run evaluated in the tier is done without its model: entries copied from another machine resume a
            # benchmark there, and nothing is trained again.
            failed += run_grid(
                [r for r in group if not evaluations[r].done], train_script, overrides, args.gpus, args.jobs
            )
            jobs = [evaluations[run] for run in group if run.finished or evaluations[run].done]
            failed += run_jobs(jobs, args.gpus, args.jobs)
    corpus = os.path.basename(os.path.normpath(args.recipe))
    reports = os.path.join(args.output_folder, args.tier)
    title = f"{corpus}: the benchmark, {args.tier} tier"
    report = aggregate(args.output_folder, args.trainings, args.tier, reports, title, args.baseline)
    if report:
        logger.info(f"Benchmark ({os.path.join(reports, 'benchmark.md')}):\n{report}")
    if failed:
        logger.error(f"Failed: {', '.join(failed)}. Run the same command again to resume them.")
        sys.exit(1)


if __name__ == "__main__":
    main()
