"""Pictures of a run and of a grid, each a PNG beside the file it is drawn from.

- ``robustness.png`` (from ``robustness.csv`` and ``attack_suite.csv``): UAR against the
  budget, eps on the features and SNR on the waveform, one line per attack, real-data UAR
  and chance as reference lines; dev and test side by side.
- ``confusion_test.png`` / ``confusion_test_eps<eps>.png``: confusion matrices on real and
  fake data (rows normalised to recall; the counts written in the cells); ``plot_confusion``
  draws the dev ones (``confusion_valid*.csv``) on demand.
- ``train_log.png`` (from ``train_log.txt``): losses and dev UAR per epoch.
- ``spectrogram_triptych.png`` (from ``spectrogram_triptych.npz``): real log-Mel,
  perturbation, fake log-Mel of one test utterance, as in the paper's figures.
- ``transfer.png`` (``transfer.csv``), ``success_matrix.png`` (``success_matrix.csv``).
- ``robustness_<model>.png`` (from the sweep's ``grid_robustness.csv``): one line per training.
- ``certified_uar.png`` (from ``certified_uar.csv``): a smoothed classifier's certified UAR against the
  raw radius, and against the SNR (waveform) or the Linf budget it covers (features).

matplotlib is an install requirement; where it is missing anyway, every function logs one
message saying so and returns None, and the run goes on.
"""

import csv
import glob
import logging
import os
import re

import numpy as np

from ser_adv_brain.evaluation.suite import in_decibels
from ser_adv_brain.reports.suite_report import ROOM_ROWS
from ser_adv_brain.tables import read_csv

logger = logging.getLogger(__name__)

MISSING = 'matplotlib is not installed: no pictures drawn (pip install -e ".[dev]" installs it).'
MODE_COLOURS = {"single": "black", "vanilla": "Blues", "similarity": "Oranges"}
SPLIT_TITLES = {"valid": "Dev", "test": "Test"}


def pyplot():
    """matplotlib's pyplot on a file-only backend, or None (and the message, once) if it is not installed."""
    try:
        import matplotlib
    except ImportError:
        if not getattr(pyplot, "warned", False):
            logger.warning(MISSING)
            pyplot.warned = True
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path):
    plt = pyplot()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def reference_lines(ax, real, n_classes):
    """Real-data UAR (dashed) and chance (dotted)."""
    if real is not None:
        ax.axhline(real, color="grey", linestyle="--", linewidth=1, label="real data (eps 0)")
        ax.annotate(
            f"{real:.3f}",
            (1, real),
            xycoords=("axes fraction", "data"),
            xytext=(-2, 2),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color="grey",
        )
    if n_classes:
        ax.axhline(1 / n_classes, color="grey", linestyle=":", linewidth=1, label=f"chance (1/{n_classes})")


def run_title(folder):
    """``vgg16_vanilla (1234)``: the run's ``experiment_name`` and its folder's name (a tier's folder: its run's).

    The name is read from the ``hyperparams.yaml`` of the folder or of the run above it, as text: loading
    the yaml would run its ``!new:`` tags to draw a title.
    """
    folder = os.path.normpath(folder)
    for run_folder, label in ((folder, os.path.basename(folder)), (os.path.dirname(folder), None)):
        path = os.path.join(run_folder, "hyperparams.yaml")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                found = re.search(r"^experiment_name:\s*(\S+)", f.read(), flags=re.MULTILINE)
            if found:
                label = label or f"{os.path.basename(run_folder)}, {os.path.basename(folder)}"
                return f"{found.group(1)} ({label})"
    return os.path.basename(folder)


# Each panel's x axis: the budget of its threat model.
AXIS_LABELS = {
    "features_linf": "eps (Linf, normalised log-Mel features)",
    "waveform_linf": "eps (Linf amplitude on the samples, full scale 1)",
    "waveform_snr": "SNR, dB (smaller = larger budget)",
    "waveform_room_snr": "SNR, dB (smaller = larger budget)",
    "waveform_universal": "dB below the reference level (smaller = larger budget)",
}
PANEL_TITLES = {
    "features_linf": "log-Mel features, Linf",
    "waveform_linf": "waveform, Linf",
    "waveform_snr": "waveform, SNR budget",
    "waveform_room_snr": "waveform, SNR budget, held-out rooms",
    "waveform_universal": "waveform, universal",
}


def plot_robustness(folder):
    """``robustness.png`` from a run's ``robustness.csv`` and ``attack_suite.csv`` (either may be missing).

    Top row: the paper's FGSM report in its threat model (Linf on the normalised log-Mel
    features; on the samples, for a model that takes the waveform), UAR vs eps, with each
    suite attack and robust UAR there. A row below for each waveform threat model of the
    suite: UAR vs SNR in dB, the axis running from small to large budgets.
    """
    plt = pyplot()
    if plt is None:
        return None
    fgsm_csv, suite_csv = os.path.join(folder, "robustness.csv"), os.path.join(folder, "attack_suite.csv")
    fgsm = read_csv(fgsm_csv) if os.path.isfile(fgsm_csv) else []
    suite = read_csv(suite_csv) if os.path.isfile(suite_csv) else []
    splits = list(dict.fromkeys(r["split"] for r in fgsm or suite))
    n_classes = class_count(folder)
    # Reports written before the column were on the features.
    fgsm_group = [fgsm[0].get("threat_model") or "features_linf"] if fgsm else []
    waveform = sorted({r["threat_model"] for r in suite if r["threat_model"].startswith("waveform")} - set(fgsm_group))
    groups = fgsm_group + waveform
    fig, axes = plt.subplots(len(groups), len(splits), figsize=(5.2 * len(splits), 3.6 * len(groups)), squeeze=False)
    for col, split in enumerate(splits):
        curve = sorted((float(r["eps"]), float(r["UAR"])) for r in fgsm if r["split"] == split)
        real = next((uar for eps, uar in curve if eps == 0), None)
        for row, group in enumerate(groups):
            ax = axes[row][col]
            if group in fgsm_group:
                ax.plot(*zip(*curve), marker="o", color="black", label="FGSM as the paper reports it (robustness.csv)")
            # An attack's own line needs its UAR at every budget: with early exit each attack ran
            # only on what the others left, and the robust UAR line is their joint worst case.
            by_attack, partial = {}, set()
            for r in suite:
                if r["split"] == split and r["threat_model"] == group:
                    if not (r["UAR_alone"] or r["attack"] == "robust"):
                        partial.add(r["attack"])
                    value = r["UAR_alone"] or r["UAR_worst_so_far"]
                    by_attack.setdefault(r["attack"], []).append((float(r["budget"]), float(value)))
            by_attack = {name: points for name, points in by_attack.items() if name not in partial}
            for name, points in by_attack.items():
                points = sorted(points)
                if name == "robust":  # under the attacks' lines, which it often equals
                    ax.plot(
                        *zip(*points),
                        marker="s",
                        markersize=9,
                        color="crimson",
                        linewidth=4,
                        alpha=0.45,
                        zorder=1,
                        label="robust UAR (worst case per utterance)",
                    )
                else:
                    ax.plot(*zip(*points), marker="o", markersize=4, label=f"{name} (attack suite)")
            reference_lines(ax, real, n_classes)
            ax.set_ylim(0, 1)
            budgets = {b for points in by_attack.values() for b, _ in points}
            ax.set_xticks(sorted(budgets | ({eps for eps, _ in curve} if group in fgsm_group else set())))
            ax.set_xlabel(AXIS_LABELS.get(group, group))
            if in_decibels(group):
                ax.invert_xaxis()
            ax.set_ylabel("UAR")
            ax.set_title(f"{SPLIT_TITLES.get(split, split)}: {PANEL_TITLES.get(group, group)}", fontsize=10)
            ax.grid(alpha=0.3)
            if col == len(splits) - 1:
                ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    title = f"Robustness of {run_title(folder)}"
    if any(r["attack"] != "robust" and not r["UAR_alone"] for r in suite):
        attacks = ", ".join(dict.fromkeys(r["attack"] for r in suite if r["attack"] not in ("robust", *ROOM_ROWS)))
        title += (
            f"\n(attack suite with early exit: {attacks} ran in turn on what was left; robust UAR is their worst case)"
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, os.path.join(folder, "robustness.png"))


def class_count(folder):
    """The number of classes, from a confusion matrix of the run (None if there is none)."""
    files = sorted(glob.glob(os.path.join(folder, "confusion_*.csv")))
    return len(read_csv(files[0])) - 1 if files else None  # minus the UAR row


def plot_confusion(csv_path):
    """A heatmap of a ``ConfusionMatrix.write`` CSV: colour is the row share (recall), the cell text the count."""
    plt = pyplot()
    if plt is None:
        return None
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    labels = rows[0][1:-2]
    body = [r for r in rows[1:] if r[0] != "UAR"]
    counts = np.array([[int(v) for v in r[1 : 1 + len(labels)]] for r in body])
    uar = next((r[-1] for r in rows if r[0] == "UAR"), "")
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(labels), 0.9 + 0.55 * len(labels)))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [f"{label} ({counts[i].sum()})" for i, label in enumerate(labels)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (utterances)")
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    eps = re.search(r"_eps([0-9.]+)$", stem)
    data = f"fake data, FGSM eps {eps.group(1)}" if eps else "real data"
    split = stem.split("_")[1]
    ax.set_title(f"{SPLIT_TITLES.get(split, split)}, {data}: UAR {float(uar):.3f}" if uar else data, fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the true class (recall on the diagonal)", shrink=0.8)
    return save(fig, os.path.splitext(csv_path)[0] + ".png")


def parse_train_log(path):
    """``train_log.txt`` (SpeechBrain's ``FileTrainLogger``) -> list of ``{key: value}`` per epoch line.

    Keys are ``"<stage> <stat>"`` (``train loss``, ``valid UAR``, ...) and ``epoch``; the test line is left out.
    """
    epochs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("epoch:"):
                continue
            values = {}
            for part in re.split(r" - |, ", line.strip()):
                key, _, value = part.rpartition(": ")
                try:
                    values[key] = float(value)
                except ValueError:
                    continue
            epochs.append(values)
    return epochs


def plot_training(train_log):
    """``train_log.png``: training losses (and their real / fake parts) and dev loss; dev UAR and accuracy."""
    plt = pyplot()
    if plt is None:
        return None
    epochs = parse_train_log(train_log)
    if not epochs:
        logger.info(f"{train_log} has no epoch line: no training curves drawn.")
        return None
    x = [e["epoch"] for e in epochs]
    fig, (loss_ax, uar_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    keys = list(dict.fromkeys(k for e in epochs for k in e))
    names = {
        "train loss": "train loss (the objective)",
        "train real_loss": "train loss, real",
        "train fake_loss": "train loss, fake",
        "train distance": "train embedding distance",
        "valid loss": "dev loss",
    }
    for key in keys:
        points = [(e["epoch"], e[key]) for e in epochs if key in e]
        if key.startswith("train ") or key == "valid loss":
            style = "--" if key.startswith("valid") else "-"
            loss_ax.plot(*zip(*points), style, marker=".", label=names.get(key, key.replace("_", " ")))
        elif key.startswith("valid "):
            uar_ax.plot(*zip(*points), marker=".", label=key.replace("valid", "dev"))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("negative log-likelihood")
    loss_ax.set_title("Training objective and its parts; dev loss", fontsize=9)
    uar_ax.set_xlabel("epoch")
    uar_ax.set_ylim(0, 1)
    uar_ax.set_title("Dev (validation) metrics", fontsize=9)
    for ax in (loss_ax, uar_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_xticks(x if len(x) <= 20 else x[:: max(1, len(x) // 10)])
    fig.tight_layout()
    return save(fig, os.path.splitext(train_log)[0] + ".png")


def plot_triptych(npz_path):
    """Real log-Mel, perturbation (fake - real) and fake log-Mel, frames x Mel bins, as the model sees them."""
    plt = pyplot()
    if plt is None:
        return None
    data = np.load(npz_path)
    real, fake = data["real"].T, data["fake"].T  # [n_mels, frames]: frequency up, time to the right
    delta = fake - real
    bound = max(float(np.abs(delta).max()), 1e-12)
    low, high = np.percentile(np.concatenate([real, fake]), [1, 99])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
    panels = [
        (real, "viridis", low, high, f"real: true {data['true']}, predicted {data['predicted_real']}"),
        (delta, "RdBu_r", -bound, bound, f"perturbation (FGSM, eps {float(data['eps']):g})"),
        (fake, "viridis", low, high, f"fake: predicted {data['predicted_fake']}"),
    ]
    for ax, (image, cmap, vmin, vmax, title) in zip(axes, panels):
        shown = ax.imshow(
            image, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame")
        fig.colorbar(shown, ax=ax, label="z-scored log-Mel" if cmap == "viridis" else "change (standard deviations)")
    axes[0].set_ylabel("Mel bin")
    fig.suptitle(f"Utterance {data['utterance']}", fontsize=10)
    fig.tight_layout()
    return save(fig, os.path.splitext(npz_path)[0] + ".png")


def heatmap(matrix, rows, cols, title, xlabel, ylabel, path, colour_label, bold=None):
    """A 0-1 heatmap with the values written in the cells; ``bold``: a boolean mask of cells to stress."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 0.8 * len(cols), 1.0 + 0.5 * len(rows)))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(matrix[i, j]):
                weight = "bold" if bold is not None and bold[i][j] else "normal"
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    fontweight=weight,
                    color="black" if matrix[i, j] > 0.6 else "white",
                )
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=colour_label)
    return save(fig, path)


def plot_transfer(csv_path):
    """``transfer.png`` from ``transfer.csv``: UAR of the target (column) on fake data made on the source (row)."""
    if pyplot() is None:
        return None
    rows = read_csv(csv_path)
    folders = list(dict.fromkeys(r["target"] for r in rows))
    short = {f: os.path.basename(os.path.normpath(f)) or f for f in folders}
    if len(set(short.values())) < len(folders):  # seed folders: name them by their parent
        short = {f: os.path.join(*os.path.normpath(f).split(os.sep)[-2:]) for f in folders}
    grid = [e for e in dict.fromkeys(r["eps"] for r in rows) if e != "real"]
    labels = ["real data"] + [f"{short[s]}, eps {float(e):g}" for e in grid for s in folders]
    uar = {(r["eps"], r["source"], r["target"]): float(r["UAR"]) for r in rows}
    matrix = np.array(
        [[uar[("real", "", t)] for t in folders]] + [[uar[(e, s, t)] for t in folders] for e in grid for s in folders]
    )
    white_box = [[False] * len(folders)] + [[s == t for t in folders] for _ in grid for s in folders]
    return heatmap(
        matrix,
        labels,
        [short[f] for f in folders],
        "Transfer: UAR of the target on the source's fake data\n(bold: source = target, the white-box attack)",
        "target model (scores the fake data)",
        "source of the fake data",
        os.path.splitext(csv_path)[0] + ".png",
        "UAR",
        bold=white_box,
    )


def plot_success_matrix(csv_path):
    """``success_matrix.png`` from ``success_matrix.csv``: share of each true emotion pushed to each target."""
    if pyplot() is None:
        return None
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    targets, labels = rows[0][1:], [r[0] for r in rows[1:]]
    matrix = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    return heatmap(
        matrix,
        labels,
        targets,
        "Targeted attack: share of utterances classified as the target",
        "target emotion",
        "true emotion",
        os.path.splitext(csv_path)[0] + ".png",
        "success rate",
    )


def plot_certified_uar(csv_path):
    """``certified_uar.png`` from ``certified_uar.csv``: certified UAR against the raw L2 radius (left) and against
    the radius as each utterance's SNR in dB, or as the Linf budget it covers (right), one line per split.

    The curves are exact step functions: the CSV holds every radius where certified UAR changes.
    """
    plt = pyplot()
    if plt is None:
        return None
    rows = read_csv(csv_path)
    axes_names = list(dict.fromkeys(r["axis"] for r in rows))
    fig, axes = plt.subplots(1, len(axes_names), figsize=(5.2 * len(axes_names), 3.6), squeeze=False)
    labels = {
        "radius": "certified L2 radius (raw, the smoothed input's units)",
        "snr_db": "SNR, dB, of each utterance at its radius (smaller = larger budget)",
        "linf_eps": "Linf eps covered on the features (radius / sqrt(d))",
    }
    for ax, name in zip(axes[0], axes_names):
        for split in dict.fromkeys(r["split"] for r in rows):
            points = [
                (float(r["value"]), float(r["certified_UAR"])) for r in rows if (r["split"], r["axis"]) == (split, name)
            ]
            if points:
                ax.plot(*zip(*points), drawstyle="steps-pre", label=SPLIT_TITLES.get(split, split))
        if name == "snr_db":
            ax.invert_xaxis()
        ax.set_xlabel(labels.get(name, name))
        ax.set_ylabel("certified UAR")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    folder = os.path.dirname(csv_path)
    fig.suptitle(f"Certified UAR of the smoothed {run_title(folder)} (an abstention counts as wrong)", fontsize=10)
    fig.tight_layout()
    return save(fig, os.path.splitext(csv_path)[0] + ".png")


def plot_grid_curves(grid_csv):
    """``robustness_<model>.png`` beside the sweep's ``grid_robustness.csv``: dev and test UAR vs FGSM eps per training.

    Single training in black, vanilla in blues (solid), similarity in oranges (dashed), darker
    for a larger training eps; a star marks each model's training eps (the paper's "fake" cell).
    With replicates (seeds, CPU kernel settings), each line is their mean and a band their range.
    """
    plt = pyplot()
    if plt is None:
        return []
    rows = read_csv(grid_csv)
    paths = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        splits = sorted(
            dict.fromkeys(r["split"] for r in mine),
            key=lambda s: list(SPLIT_TITLES).index(s) if s in SPLIT_TITLES else 9,
        )
        fig, axes = plt.subplots(1, len(splits), figsize=(4.6 * len(splits) + 2.2, 4), squeeze=False, sharey=True)
        runs = list(dict.fromkeys((r["training"], r["train_eps"]) for r in mine))
        for ax, split in zip(axes[0], splits):
            real_single = None
            for mode, train_eps in runs:
                replicates = {}
                for r in mine:
                    if (r["training"], r["train_eps"], r["split"]) == (mode, train_eps, split):
                        replicates.setdefault(float(r["eps"]), []).append(float(r["UAR"]))
                points = [(eps, sum(uars) / len(uars)) for eps, uars in sorted(replicates.items())]
                style = {"color": "black", "linewidth": 2.2, "label": mode}
                if mode == "single":
                    real_single = next((u for e, u in points if e == 0), None)
                else:
                    same = [run for run in runs if run[0] == mode]
                    shade = 0.4 + 0.6 * same.index((mode, train_eps)) / max(1, len(same) - 1)
                    style = {
                        "color": plt.get_cmap(MODE_COLOURS.get(mode, "Greys"))(shade),
                        "linewidth": 1.4,
                        "linestyle": "--" if mode == "similarity" else "-",
                        "label": f"{mode}, trained at eps {float(train_eps):g}",
                    }
                ax.plot(*zip(*points), marker="o", markersize=3, **style)
                if any(len(uars) > 1 for uars in replicates.values()):
                    ax.fill_between(
                        sorted(replicates),
                        [min(replicates[e]) for e in sorted(replicates)],
                        [max(replicates[e]) for e in sorted(replicates)],
                        color=style["color"],
                        alpha=0.15,
                    )
                if train_eps:
                    at = [u for e, u in points if abs(e - float(train_eps)) < 1e-9]
                    ax.plot(
                        [float(train_eps)] * len(at),
                        at,
                        marker="*",
                        markersize=10,
                        color=style["color"],
                        linestyle="none",
                    )
            reference_lines(ax, real_single, None)
            ax.set_title(f"{SPLIT_TITLES.get(split, split)} UAR", fontsize=10)
            ax.set_xlabel("eps of the FGSM test data (0 = real data)")
            ax.set_xticks(sorted({float(r["eps"]) for r in mine}))
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("UAR")
        handles, labels = axes[0][-1].get_legend_handles_labels()
        labels = [label.replace("real data (eps 0)", "single, real data") for label in labels]
        axes[0][-1].legend(
            handles,
            labels,
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.02, 1),
            title="star: the training eps",
            title_fontsize=8,
        )
        fig.suptitle(f"{model}: UAR on FGSM fake data, by training", fontsize=11)
        fig.tight_layout()
        paths.append(save(fig, os.path.join(os.path.dirname(grid_csv), f"robustness_{model}.png")))
    return paths


def draw_run(folder):
    """Draws every picture whose source file is in a run's output folder; returns the paths written."""
    if pyplot() is None:
        return []
    # A suite without the FGSM report (ser-adv attack-interface) has its picture too.
    reports = [os.path.join(folder, name) for name in ("robustness.csv", "attack_suite.csv")]
    sources = [
        (plot_robustness, folder, next((path for path in reports if os.path.exists(path)), reports[0])),
        (plot_training, os.path.join(folder, "train_log.txt"), None),
        (plot_triptych, os.path.join(folder, "spectrogram_triptych.npz"), None),
        (plot_success_matrix, os.path.join(folder, "success_matrix.csv"), None),
    ]
    # Test split only: a run's pictures cost seconds of every run, in the tests too.
    sources += [(plot_confusion, path, None) for path in sorted(glob.glob(os.path.join(folder, "confusion_test*.csv")))]
    paths = []
    for plot, argument, source in sources:
        if os.path.exists(source or argument):
            paths.append(plot(argument))
    return [p for p in paths if p]


def plot_benchmark(csv_path):
    """``benchmark.png`` beside the benchmark's ``benchmark.csv``: UAR against the budget, a panel per threat model.

    Each training is a line through its mean UAR on real data and robust (or certified, in the certified tier)
    at each budget, in a band of its 95% interval (an over-the-air threat model's other two figures, and a
    smoothed classifier's under attack, are in the table). Feature budgets grow to the right from real data
    (eps 0); SNR budgets grow to the right as the SNR falls, from real data (no noise).
    """
    plt = pyplot()
    if plt is None:
        return None
    rows = [r for r in read_csv(csv_path) if r["kind"] in ("real", "robust", "certified")]
    kind = next(r["kind"] for r in rows if r["kind"] != "real")
    groups = list(dict.fromkeys(r["figure"].split("@")[0] for r in rows if r["kind"] == kind))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups) + 2.0, 4), squeeze=False, sharey=True)
    for ax, group in zip(axes[0], groups):
        for name in dict.fromkeys(r["training"] for r in rows):
            mine = {r["figure"]: r for r in rows if r["training"] == name}
            points = [("real", mine["real"])] + [
                (key.split("@")[1], mine[key]) for key in mine if key.startswith(group + "@")
            ]
            x = range(len(points))
            means, lows, highs = ([float(p[1][field]) for p in points] for field in ("UAR", "low", "high"))
            line = ax.plot(x, means, marker="o", markersize=3, linewidth=1.4, label=name)[0]
            ax.fill_between(x, lows, highs, color=line.get_color(), alpha=0.12)
            decibels = in_decibels(group)
            ax.set_xticks(list(x), [f"{label} dB" if decibels and label != "real" else label for label, _ in points])
        ax.set_title(PANEL_TITLES.get(group, group.replace("_", ", ")), fontsize=10)
        ax.set_xlabel(AXIS_LABELS.get(group, "budget"))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test UAR (mean over folds, 95% interval)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"{kind.capitalize()} UAR against the budget, by training", fontsize=11)
    fig.tight_layout()
    return save(fig, os.path.splitext(csv_path)[0] + ".png")
