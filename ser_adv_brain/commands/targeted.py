"""The targeted success matrix of a trained model: which emotion can be forced into which.

Usage:
    python -m ser_adv_brain.targeted_success results/EmoDB/cnn4_vanilla/final
    ... --attack="!new:ser_adv_brain.attacks.PGD {eps: 0.04, steps: 10, eta: null}" --split=test

Every utterance of the split is attacked once per emotion with the attack aimed
at it (``targeted_success_matrix``; default attack: PGD-10, Linf eps 0.04, on
the features); ``success_matrix.csv``, ``success_matrix.md`` and
``success_matrix.png`` (a heatmap) in the folder give, per true emotion (rows), the share the model then calls each target
emotion (columns). The model is the checkpoint ``select_checkpoint`` names.
"""

import argparse
import logging
import os
import sys

import torch

from ser_adv_brain.commands.transfer import load_attack
from ser_adv_brain.evaluation.targeted import targeted_success_matrix
from ser_adv_brain.reports.plots import plot_success_matrix
from ser_adv_brain.reports.targeted_report import write_success_matrix
from ser_adv_brain.runs.reload import TrainedModel

logger = logging.getLogger(__name__)

DEFAULT_ATTACK = "!new:ser_adv_brain.attacks.PGD {eps: 0.04, steps: 10, eta: null}"


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a training output folder")
    parser.add_argument("--attack", default=DEFAULT_ATTACK, help="a yaml FGSM or PGD plug-in (inline or a file)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        trained = TrainedModel(args.folder, args.device)
    except FileNotFoundError as error:  # load_trained names the folder without a run
        sys.exit(f"targeted_success: {error}")
    encoder = trained.hparams["label_encoder"]
    attack = load_attack(args.attack).set_class_names(encoder)
    labels = encoder.decode_ndim(list(range(trained.hparams["n_classes"])))
    with torch.no_grad():
        batches = [(trained.brain.compute_features(wavs), targets) for _, wavs, targets in trained.batches(args.split)]
    rates = targeted_success_matrix(attack, trained.model, batches, trained.hparams["n_classes"])
    title = f"{trained.hparams['experiment_name']}: targeted {attack!r}, {args.split} (share forced into each target)"
    table = write_success_matrix(rates, labels, args.folder, title)
    logger.info(f"Targeted success matrix ({args.folder}/success_matrix.md):\n{table}")
    plot_success_matrix(os.path.join(args.folder, "success_matrix.csv"))
    return rates


if __name__ == "__main__":
    main()
