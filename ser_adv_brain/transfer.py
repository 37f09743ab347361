"""Transfer attacks (black box): fake data made on each source model, scored by every target model.

Usage:
    python -m ser_adv_brain.transfer results/EmoDB/cnn4_single/1234 results/EmoDB/cnn4_vanilla/1234 \\
        results/EmoDB/cnn4_similarity/1234 --output_folder=results/EmoDB/transfer
    ... --attack="!new:ser_adv_brain.attacks.FGSM {eps: 0.02, eta: null, label_source: target}" --eps="[0.02, 0.1]"

Options (after the folders): ``--attack`` (a yaml attack plug-in, inline or a
file; default: the first white-box attack of the first folder's
``attack_suite``), ``--eps`` (a yaml list of budgets; default: that attack's
threat model's ``suite_budgets`` in the first folder), ``--split`` (``test``),
``--output_folder`` (``transfer_results``), ``--device`` (``cpu``).

Each folder's model is the checkpoint its ``select_checkpoint`` names. Each
source's fake data are made once per budget, on the split's utterances (true
labels), and every target scores them: ``transfer.csv``, ``transfer.md`` and
``transfer.png`` (a heatmap) give the N x N UAR matrix per budget (rows: source, columns: target; the
diagonal is the white-box attack). Feature-domain fake data go from one model
to another as log-Mel features (each model's own normaliser applies), so the
folders must share their feature settings and the split's utterances.
"""

import argparse
import csv
import logging
import os
import sys

import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.attack_suite import suite_entries
from ser_adv_brain.attacks.waveform_pgd import WaveformClassifier
from ser_adv_brain.masking_checks import attack_kind
from ser_adv_brain.metrics import ConfusionMatrix
from ser_adv_brain.plots import plot_transfer
from ser_adv_brain.recipe import load_trained, selection_key

logger = logging.getLogger(__name__)

# Settings that make one model's log-Mel features another's.
FEATURE_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "n_frames")


class TransferModel:
    """One folder's restored model, its split and the means to run it, for the transfer matrix."""

    def __init__(self, folder, device):
        self.folder = folder
        self.hparams, self.datasets, self.brain = load_trained(folder, [f"--device={device}", "--noprogressbar"])
        self.brain.on_evaluate_start(max_key=selection_key(self.hparams["select_checkpoint"]))
        self.brain.modules.eval()
        self.model = self.brain.model
        self.normalizer = self.brain.modules.normalizer
        self.waveform_model = WaveformClassifier(self.brain.modules.compute_features, self.normalizer, self.model).eval()

    def batches(self, split):
        """``(ids, wavs, targets)`` of the split, in the order of its manifest."""
        loader_kwargs = {**self.hparams["test_dataloader_options"], "ckpt_prefix": None}
        loader = self.brain.make_dataloader(self.datasets[split], sb.Stage.TEST, **loader_kwargs)
        for batch in loader:
            batch = batch.to(self.brain.device)
            yield list(batch.id), batch.sig.data, self.brain.targets(batch)

    def fake_data(self, attack, split, eps):
        """``{id: adversarial log-Mel features or waveform}`` of the split, made on this model."""
        fakes = {}
        for ids, wavs, targets in self.batches(split):
            if attack.domain == "waveform":
                fake = attack.perturb(self.waveform_model, wavs, targets, eps=eps, keys=ids)
            else:
                with torch.no_grad():
                    feats = self.brain.compute_features(wavs)
                # Back from this model's z-score to log-Mel, which every target normalises its own way.
                fake = attack.perturb(self.model, feats, targets, eps=eps, keys=ids)
                fake = fake * self.normalizer.std + self.normalizer.mean
            fakes.update(zip(ids, fake.detach()))
        return fakes

    def score(self, fakes, domain, split):
        """UAR of this model on a source's fake data (``fakes`` None: on real data)."""
        confusion = ConfusionMatrix(self.hparams["n_classes"])
        for ids, wavs, targets in self.batches(split):
            with torch.no_grad():
                if fakes is None:
                    logits, _ = self.model(self.brain.compute_features(wavs))
                elif domain == "waveform":
                    logits, _ = self.waveform_model(torch.stack([fakes[i] for i in ids]))
                else:
                    logits, _ = self.model(self.normalizer(torch.stack([fakes[i] for i in ids])))
            confusion.append(logits.argmax(dim=-1), targets)
        return confusion.uar()


def check_compatible(models, split, domain):
    """Stops, naming the folder and setting, unless every model can score every other's fake data."""
    first = models[0]
    ids = sorted(first.datasets[split].data_ids)
    for other in models[1:]:
        if sorted(other.datasets[split].data_ids) != ids:
            sys.exit(f"{other.folder}: its {split} split holds other utterances than {first.folder}'s.")
        if other.hparams["label_encoder"].lab2ind != first.hparams["label_encoder"].lab2ind:
            sys.exit(f"{other.folder}: its label encoder differs from {first.folder}'s.")
        keys = FEATURE_KEYS if domain == "features" else ("sample_rate", "n_frames", "hop_length")
        for key in keys:
            if other.hparams[key] != first.hparams[key]:
                sys.exit(f"{other.folder}: {key} is {other.hparams[key]!r}, {first.folder} has {first.hparams[key]!r}.")


def load_attack(text):
    """An attack plug-in from yaml text or a yaml file."""
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            text = f.read()
    return load_hyperpyyaml(f"attack: {text}")["attack"]


def transfer_matrix(models, attack, eps_grid, split="test"):
    """``{eps: {(source, target): UAR}}`` and ``{target: UAR on real data}``; folders name the models."""
    real = {m.folder: m.score(None, attack.domain, split) for m in models}
    matrices = {}
    for eps in eps_grid:
        matrices[eps] = {}
        for source in models:
            fakes = source.fake_data(attack, split, eps)
            for target in models:
                matrices[eps][(source.folder, target.folder)] = target.score(fakes, attack.domain, split)
    return matrices, real


def write_transfer_report(matrices, real, attack, folders, output_folder, split):
    """``transfer.csv`` (eps, source, target, UAR) and ``transfer.md`` (one N x N table per eps)."""
    os.makedirs(output_folder, exist_ok=True)
    with open(os.path.join(output_folder, "transfer.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["eps", "source", "target", "UAR"])
        for eps, matrix in matrices.items():
            writer.writerows([eps, source, target, f"{uar:.4f}"] for (source, target), uar in matrix.items())
        writer.writerows(["real", "", target, f"{uar:.4f}"] for target, uar in real.items())
    names = [os.path.normpath(folder) for folder in folders]
    lines = [f"### Transfer: {attack!r}, {split} UAR (rows: source of the fake data, columns: target)", ""]
    lines += ["Models: " + "; ".join(f"{i + 1} = `{name}`" for i, name in enumerate(names)), ""]
    header = "| source \\ target | " + " | ".join(str(i + 1) for i in range(len(folders))) + " |"
    rule = "|---|" + "---|" * len(folders)
    lines += [header, rule, "| real data | " + " | ".join(f"{real[f]:.3f}" for f in folders) + " |"]
    for eps, matrix in matrices.items():
        for i, source in enumerate(folders):
            cells = [f"{matrix[(source, target)]:.3f}" for target in folders]
            lines.append(f"| {i + 1}, eps {eps:g} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(output_folder, "transfer.md"), "w", encoding="utf-8") as f:
        f.write(table)
    return table


def main(argv=None):
    """Parses ``FOLDER FOLDER ... [options]``, makes and scores the fake data, writes the matrix."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="training output folders (two or more)")
    parser.add_argument("--attack", default=None, help="a yaml attack plug-in (inline or a file)")
    parser.add_argument("--eps", default=None, help="a yaml list of budgets")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--output_folder", default="transfer_results")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if len(args.folders) < 2:
        parser.error("give at least two training output folders")
    try:
        models = [TransferModel(folder, args.device) for folder in args.folders]
    except FileNotFoundError as error:  # load_trained names the folder without a run
        sys.exit(f"transfer: {error}")
    first = models[0].hparams
    if args.attack is None:
        entries = [e for e in suite_entries(first["attack_suite"]) if attack_kind(e.attack) != "black-box"]
        if not entries:
            sys.exit(f"{args.folders[0]}: attack_suite has no white-box attack: give --attack.")
        attack, threat = entries[0].attack, entries[0].threat_model
    else:
        attack = load_attack(args.attack)
        threat = "_".join(attack.threat_model)
    if hasattr(attack, "set_class_names"):  # a targeted attack names its class
        attack.set_class_names(first["label_encoder"])
    eps_grid = yaml.safe_load(args.eps) if args.eps else first["suite_budgets"][threat]
    check_compatible(models, args.split, attack.domain)
    matrices, real = transfer_matrix(models, attack, [float(e) for e in eps_grid], args.split)
    table = write_transfer_report(matrices, real, attack, args.folders, args.output_folder, args.split)
    logger.info(f"Transfer matrix ({args.output_folder}/transfer.md):\n{table}")
    plot_transfer(os.path.join(args.output_folder, "transfer.csv"))
    return matrices, real


if __name__ == "__main__":
    main()
