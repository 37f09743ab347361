"""The robustness benchmark: trainings x speaker folds x seeds, each trained and evaluated, then aggregated.

Usage (from the repository root; every option it does not know goes to each run's ``train.py``):

    python -m ser_adv_brain.benchmark recipes/EmoDB --data_folder=/path/to/emodb/wav --base_channels=16

Each run is ``python <recipe>/train.py <recipe>/hparams/<training>.yaml --fold=<k> --seed=<s>
--output_folder=<output_folder>/<training>/fold<k>-seed<s> <your options>``, resumable as the
sweep's (``ser_adv_brain.grid``).
"""

import argparse
import logging
import os
import sys

from ser_adv_brain.commands.grid import GridRun, replicates, run_grid, unknown_override_keys

logger = logging.getLogger(__name__)

# The eight trainings: single, the paper's two noise baselines and two defences, and PGD, TRADES and fast training.
TRAININGS = ("single", "raw_noise", "logmel_noise", "vanilla", "similarity", "pgd", "trades", "fast")


def plan_benchmark(hparams_dir, output_folder, trainings, folds, seeds):
    """The runs, fold by fold (a partial benchmark holds whole folds); every missing yaml is named before any run."""
    files = {training: os.path.join(hparams_dir, f"{training}.yaml") for training in trainings}
    missing = [path for path in files.values() if not os.path.isfile(path)]
    if missing:
        have = sorted(f[: -len(".yaml")] for f in os.listdir(hparams_dir) if f.endswith(".yaml")) if os.path.isdir(hparams_dir) else []
        raise FileNotFoundError(f"No yaml for {', '.join(missing)} (--trainings); {hparams_dir} has {have}.")
    return [GridRun(training, files[training], output_folder, replicate=replicate)
            for replicate in replicates(seeds=seeds, folds=folds) for training in trainings]  # fmt: skip


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("recipe", help="recipe folder holding train.py and hparams/ (recipes/EmoDB)")
    parser.add_argument("--trainings", nargs="+", default=None, help="yaml names in <recipe>/hparams (default: cnn4_ + the eight)")
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="speaker folds (default: all 5)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1234])
    parser.add_argument("--output_folder", default=None, help="default: results/<recipe name>_benchmark")
    parser.add_argument("--gpus", nargs="+", default=[], help="GPU ids: one run per GPU at a time")
    args, overrides = parser.parse_known_args(argv)
    for option in overrides:
        if option.split("=")[0] in ("--fold", "--seed", "--output_folder"):
            parser.error(f"{option.split('=')[0]} is set per run by the benchmark (use --folds, --seeds)")
    train_script = os.path.join(args.recipe, "train.py")
    if not os.path.isfile(train_script):
        parser.error(f"{args.recipe} has no train.py")
    args.trainings = args.trainings or [f"cnn4_{training}" for training in TRAININGS]
    args.output_folder = args.output_folder or os.path.join("results", os.path.basename(os.path.normpath(args.recipe)) + "_benchmark")
    return args, train_script, overrides


def main(argv=None):
    """Trains every run of the benchmark that is not finished; exits 1 if a run failed."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    args, train_script, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
    runs = plan_benchmark(os.path.join(args.recipe, "hparams"), args.output_folder, args.trainings, args.folds, args.seeds)
    unknown = unknown_override_keys(runs, overrides)
    if unknown:
        sys.exit(f"benchmark: no yaml of the benchmark has the key(s) {unknown} (from {overrides}).")
    logger.info(f"{len(runs)} runs in {args.output_folder}, {sum(run.finished for run in runs)} already finished")
    failed = run_grid(runs, train_script, overrides, args.gpus)
    if failed:
        logger.error(f"Failed: {', '.join(failed)}. Run the same command again to resume them.")
        sys.exit(1)


if __name__ == "__main__":
    main()
