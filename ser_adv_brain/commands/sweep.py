"""``ser-adv sweep``: the paper's grid from one command, every model x training mode x eps, resumable, with its table.

Usage (from a checkout's root; every option it does not know goes to each run's ``train.py``, a
yaml key only to the runs whose yaml has it, e.g. ``--warmup_steps`` to the adversarial ones):

    ser-adv sweep recipes/DEMoS --data_folder=/path/to/DEMoS
    ser-adv sweep recipes/EmoDB --models cnn4 --data_folder=/path/to/emodb/wav --base_channels=16
    ser-adv sweep recipes/DEMoS --models vgg16 --modes vanilla --eps="[0.02, 0.04]" \\
        --data_folder=/path/to/DEMoS --precision=bf16 --gpus 0 1 2 3

Ren et al. (ICASSP 2020) train CNN-4, ResNet-50 and VGG-16 once on real data (single) and
then adversarially (vanilla and similarity) at each eps from .02 to .10, and test each
adversarially trained model on real data and on fake (FGSM) data at its own training eps,
dev and test. Each run is ``python <recipe>/train.py <hparams>/<model>_<mode>.yaml
--output_folder=<output_folder>/<run> [--attack_eps=<eps>] <your options>``.

Finished runs are skipped and the others resumed from their checkpoints (``ser_adv_brain.commands.grid``),
so a killed sweep, rerun with the same command, goes on where it stopped.

Replicates: ``--seeds 1234 1 2`` runs every run once per seed (``--seed``), and ``--cpu_kernels native
avx2`` once per CPU kernel setting (``grid.CPU_KERNELS``: the environment variables that make this host
compute what a host with other CPU kernels computes); each replicate runs in ``<run>/<replicate>``
(``seed1234-avx2``), and the table gives every cell as the mean with its range over the replicates:
how far a figure moves between the seeds and CPUs a user can meet. For example, the README's
main-command table:

    ser-adv sweep recipes/DEMoS --models vgg16 --eps="[0.02]" --seeds 1234 1 2 \\
        --cpu_kernels native avx2 --base_channels=16 --number_of_epochs=20 --warmup_steps=20

``--report_only`` starts no run: it writes the table and the curves of the runs finished so far.
With ``--gpus``, runs go one per GPU at a time (``CUDA_VISIBLE_DEVICES``; a plain process
pool); without, one after the other. At the end, from every finished run of the grid:
``paper_table.md`` / ``paper_table.csv`` (the paper's layout, its numbers beside ours, with
the attack suite's robust UAR), ``grid_robustness.csv`` (every run's FGSM curve) and one
figure of robustness curves per model beside it (``robustness_<model>.png``).
"""

import logging
import os
import sys
from typing import NamedTuple

from ser_adv_brain.commands.arguments import parser_for, yaml_floats
from ser_adv_brain.commands.grid import (
    CPU_KERNELS,
    GridRun,
    add_grid_options,
    check_grid_options,
    override_problems,
    replicates,
    run_grid,
)
from ser_adv_brain.reports.plots import plot_grid_curves
from ser_adv_brain.tables import markdown_table, read_csv, uar_text, write_csv

logger = logging.getLogger(__name__)

MODELS = ("cnn4", "resnet50", "vgg16")
MODEL_TITLES = {"cnn4": "CNN-4", "resnet50": "ResNet-50", "vgg16": "VGG-16"}
MODES = ("single", "vanilla", "similarity")
PAPER_EPS = (0.02, 0.04, 0.06, 0.08, 0.10)

# The paper's Table (UAR on DEMoS, dev / test): (model, mode, training eps, data) -> (dev, test).
PAPER_UAR = {
    ("cnn4", "single", None, "real"): (0.826, 0.836),
    ("resnet50", "single", None, "real"): (0.719, 0.813),
    ("vgg16", "single", None, "real"): (0.798, 0.836),
    ("cnn4", "vanilla", 0.02, "real"): (0.825, 0.856),
    ("cnn4", "vanilla", 0.02, "fake"): (0.744, 0.800),
    ("resnet50", "vanilla", 0.02, "real"): (0.699, 0.817),
    ("resnet50", "vanilla", 0.02, "fake"): (0.620, 0.774),
    ("vgg16", "vanilla", 0.02, "real"): (0.850, 0.847),
    ("vgg16", "vanilla", 0.02, "fake"): (0.794, 0.806),
    ("cnn4", "similarity", 0.02, "real"): (0.844, 0.797),
    ("cnn4", "similarity", 0.02, "fake"): (0.827, 0.784),
    ("resnet50", "similarity", 0.02, "real"): (0.743, 0.798),
    ("resnet50", "similarity", 0.02, "fake"): (0.732, 0.771),
    ("vgg16", "similarity", 0.02, "real"): (0.847, 0.823),
    ("vgg16", "similarity", 0.02, "fake"): (0.839, 0.821),
}
SPLITS = ("valid", "test")
TABLE_FIELDS = [
    "model",
    "training",
    "train_eps",
    "data",
    "eps",
    "split",
    "UAR",
    "paper_UAR",
    "robust_UAR",
    "run",
    "replicate",
]


class PaperCell(NamedTuple):
    """What a run of the grid stands for in the paper's table: ``eps`` is the training eps (None for single)."""

    model: str
    mode: str
    eps: float


def plan_grid(
    hparams_dir, output_folder, models=MODELS, modes=MODES, eps_grid=PAPER_EPS, seeds=(None,), kernels=(None,)
):
    """The runs of the selection, each once per seed and kernel setting; every missing yaml is named before any run.

    A run is named ``<model>_<mode>`` (single training) or ``<model>_<mode>_eps<eps>``.
    """
    runs, missing = [], []
    # Single training first, then eps by eps: a partial grid already holds whole lines of the table.
    for eps in [None, *eps_grid]:
        for model in models:
            for mode in modes:
                hparams_file = os.path.join(hparams_dir, f"{model}_{mode}.yaml")
                if not os.path.isfile(hparams_file):
                    missing.append(hparams_file)
                elif (mode == "single") == (eps is None):
                    name, options = f"{model}_{mode}", ()
                    if eps is not None:
                        name, options = f"{name}_eps{eps:g}", (f"--attack_eps={eps:g}",)
                    runs += [
                        GridRun(name, hparams_file, output_folder, options, replicate, PaperCell(model, mode, eps))
                        for replicate in replicates(seeds=seeds, kernels=kernels)
                    ]
    missing = list(dict.fromkeys(missing))
    if missing:
        have = (
            sorted(f[: -len(".yaml")] for f in os.listdir(hparams_dir) if f.endswith(".yaml"))
            if os.path.isdir(hparams_dir)
            else []
        )
        raise FileNotFoundError(f"No yaml for {', '.join(missing)} (--models / --modes); {hparams_dir} has {have}.")
    return runs


def fgsm_uar(folder):
    """``robustness.csv`` of a run as ``{(split, eps): UAR}``."""
    return {
        (r["split"], round(float(r["eps"]), 6)): float(r["UAR"])
        for r in read_csv(os.path.join(folder, "robustness.csv"))
    }


def robust_uar(folder):
    """Robust UAR (Linf on the features) of a run's attack suite as ``{(split, eps): UAR}``; empty without the suite."""
    path = os.path.join(folder, "attack_suite.csv")
    if not os.path.isfile(path):
        return {}
    return {
        (r["split"], round(float(r["budget"]), 6)): float(r["UAR_worst_so_far"])
        for r in read_csv(path)
        if r["threat_model"] == "features_linf" and r["attack"] == "robust"
    }


def table_rows(runs):
    """Rows of ``paper_table.csv`` from the finished runs: real data, and fake data at the training eps
    (UAR as the runs wrote them, unrounded).

    A single-training run gives real data and, for comparison, fake data at each eps of the grid.
    """
    grid = sorted({run.cell.eps for run in runs if run.cell.eps is not None})
    rows = []
    for run in runs:
        if not run.finished:
            continue
        model, mode, train_eps = run.cell
        fgsm, robust = fgsm_uar(run.folder), robust_uar(run.folder)
        cells = [("real", 0.0)] + ([("fake", eps) for eps in grid] if train_eps is None else [("fake", train_eps)])
        for data, eps in cells:
            paper = PAPER_UAR.get((model, mode, train_eps, data)) if data == "real" or eps == train_eps else None
            for i, split in enumerate(SPLITS):
                uar = fgsm.get((split, round(eps, 6)))
                if uar is None:
                    continue
                rows.append(
                    {
                        "model": model,
                        "training": mode,
                        "train_eps": "" if train_eps is None else train_eps,
                        "data": data,
                        "eps": eps,
                        "split": split,
                        "UAR": uar,
                        "paper_UAR": "" if paper is None else paper[i],
                        "robust_UAR": "" if data == "real" else robust.get((split, round(eps, 6)), ""),
                        "run": run.label,
                        "replicate": run.replicate.name,
                    }
                )
    return rows


def spread_text(values, replicates=1):
    """``.614`` for one value; ``.602 [.571, .640]``, the mean and the range, for several; a cell with fewer
    values than the grid's ``replicates`` says how many it has (a grid still running).

    Example
    -------
    >>> spread_text([0.6]), spread_text([0.5, 0.6, 0.7]), spread_text([0.5, 0.7], replicates=6)
    ('.600', '.600 [.500, .700]', '.600 [.500, .700] (2 of 6)')
    """
    mean = sum(values) / len(values)
    text = (
        uar_text(mean) if len(values) == 1 else f"{uar_text(mean)} [{uar_text(min(values))}, {uar_text(max(values))}]"
    )
    return text + (f" ({len(values)} of {replicates})" if len(values) < replicates else "")


def paper_markdown(rows, models, title, replicates):
    """The paper's layout: one line per training and data, dev / test per model, the paper's and robust UAR beside;
    each cell over the ``replicates`` (names) of the grid that have finished."""

    def pair(cells, key):
        values = {s: [float(r[key]) for r in cells if r["split"] == s and r[key] != ""] for s in SPLITS}
        if not any(values.values()):
            return "-"
        if key == "paper_UAR":  # the paper's own figure, the same beside every replicate
            return " / ".join(spread_text(values[s][:1]) if values[s] else "-" for s in SPLITS)
        return " / ".join(spread_text(values[s], len(replicates)) if values[s] else "-" for s in SPLITS)

    lines_keys = list(dict.fromkeys((r["training"], r["train_eps"], r["data"], r["eps"]) for r in rows))
    order = {mode: i for i, mode in enumerate(MODES)}
    # Single's real row first, then per eps: single's fake row, vanilla and similarity (real, fake).
    lines_keys.sort(
        key=lambda k: (-1 if k[2] == "real" and k[0] == "single" else float(k[1] or k[3]), order[k[0]], k[2] == "fake")
    )
    table = []
    for training, train_eps, data, eps in lines_keys:
        cells = [
            training if train_eps == "" else f"{training}, eps {float(train_eps):.2f}",
            "real" if data == "real" else f"fake, eps {float(eps):.2f}",
        ]
        for model in models:
            key = (model, training, train_eps, data, eps)
            mine = [r for r in rows if (r["model"], r["training"], r["train_eps"], r["data"], r["eps"]) == key]
            cells += [pair(mine, "UAR"), pair(mine, "paper_UAR"), pair(mine, "robust_UAR")]
        table.append(cells)
    headers = ["training", "data"]
    for model in models:
        headers += [f"{MODEL_TITLES.get(model, model)} dev / test", "paper (DEMoS)", "robust UAR"]
    spread = (
        f" Each cell: the mean over {len(replicates)} replicates ({', '.join(replicates)}) and, in "
        "brackets, their range; a cell with fewer finished replicates says how many it has."
        if len(replicates) > 1
        else ""
    )
    intro = (
        "UAR, dev / test. *fake*: FGSM data at the training eps (the paper's report: predicted labels, eta "
        "clip); *robust UAR*: the attack suite's worst case per utterance (Linf on the features, true labels) "
        "at that eps, where the suite ran that budget." + spread
    )
    return f"### {title}\n\n{intro}\n\n{markdown_table(table, headers)}\n"


def write_tables(runs, output_folder, title):
    """Writes ``paper_table.csv`` / ``.md`` and ``grid_robustness.csv``, draws the per-model curves; returns the
    markdown."""
    os.makedirs(output_folder, exist_ok=True)
    rows = table_rows(runs)
    write_csv(os.path.join(output_folder, "paper_table.csv"), rows, TABLE_FIELDS)
    models = list(dict.fromkeys(run.cell.model for run in runs))
    replicates = sorted({run.replicate.name for run in runs if run.replicate.name})
    table = paper_markdown(rows, models, title, replicates)
    with open(os.path.join(output_folder, "paper_table.md"), "w", encoding="utf-8") as f:
        f.write(table)
    curves = []
    for run in runs:
        if run.finished:
            model, mode, train_eps = run.cell
            curves += [
                {
                    "model": model,
                    "training": mode,
                    "train_eps": "" if train_eps is None else train_eps,
                    "split": split,
                    "eps": eps,
                    "UAR": uar,
                    "replicate": run.replicate.name,
                }
                for (split, eps), uar in sorted(fgsm_uar(run.folder).items())
            ]
    grid_csv = write_csv(
        os.path.join(output_folder, "grid_robustness.csv"),
        curves,
        ["model", "training", "train_eps", "split", "eps", "UAR", "replicate"],
    )
    plot_grid_curves(grid_csv)
    return table


def parse_arguments(argv):
    parser = parser_for("sweep", __doc__)
    add_grid_options(parser, "results/<recipe name>_grid")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="default: all three")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="default: all three")
    parser.add_argument(
        "--eps", default=None, help='training eps, a yaml list (default "[0.02, 0.04, 0.06, 0.08, 0.1]")'
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[None], help="replicates: one run per seed (default: the yaml's)"
    )
    parser.add_argument(
        "--cpu_kernels",
        nargs="+",
        default=[None],
        choices=list(CPU_KERNELS),
        help="replicates: one run per CPU kernel setting (default: this host's own, in the run's folder)",
    )
    parser.add_argument(
        "--report_only", action="store_true", help="start no run: the table and curves of the finished runs"
    )
    args, overrides = parser.parse_known_args(argv)
    own = {"--attack_eps": "--eps", **({"--seed": "--seeds"} if args.seeds != [None] else {})}
    train_script = check_grid_options(parser, args, overrides, own, "_grid")
    args.eps = yaml_floats(args.eps, "--eps") if args.eps else list(PAPER_EPS)
    return args, train_script, overrides


def main(argv=None):
    """Runs the selected grid, then writes the table and the curves; exits 1 if a run failed."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    args, train_script, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
    runs = plan_grid(
        args.hparams_dir, args.output_folder, args.models, args.modes, args.eps, args.seeds, args.cpu_kernels
    )
    problems = [] if args.report_only else override_problems(runs, overrides)
    if problems:
        sys.exit(f"sweep: {'; '.join(problems)}. No run was started.")
    logger.info(f"{len(runs)} runs in {args.output_folder}, {sum(run.finished for run in runs)} already finished")
    failed = [] if args.report_only else run_grid(runs, train_script, overrides, args.gpus, args.jobs)
    corpus = os.path.basename(os.path.normpath(args.recipe))
    table = write_tables(runs, args.output_folder, f"{corpus}: the paper's grid")
    logger.info(f"Paper table ({os.path.join(args.output_folder, 'paper_table.md')}):\n{table}")
    if failed:
        logger.error(f"Failed: {', '.join(failed)}. Run the same command again to resume them.")
        sys.exit(1)


if __name__ == "__main__":
    main()
