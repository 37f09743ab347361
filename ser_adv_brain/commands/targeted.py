"""``ser-adv targeted``: the targeted success matrix of a trained model, which emotion can be forced into which.

Usage:
    ser-adv targeted results/EmoDB/cnn4_vanilla/final
    ... --attack="!new:ser_adv_brain.attacks.PGD {eps: 0.04, steps: 10, eta: null}" --split=test

Every utterance of the split is attacked once per emotion with the attack aimed at it
(``ser_adv_brain.evaluation.targeted``; default attack: PGD-10, Linf eps 0.04, on the features);
``success_matrix.csv``, ``success_matrix.md`` and ``success_matrix.png`` (a heatmap) in
``--output_folder`` (default: the run's folder) give, per true emotion (rows), the share the model then
calls each target emotion (columns). The model is the checkpoint ``select_checkpoint`` names.
"""

import logging
import os
import sys

import torch

from ser_adv_brain.commands.arguments import add_device, device_options, load_attack, parser_for
from ser_adv_brain.evaluation.targeted import targeted_success_matrix
from ser_adv_brain.reports.plots import plot_success_matrix
from ser_adv_brain.reports.targeted_report import write_success_matrix
from ser_adv_brain.runs.reload import TrainedModel

logger = logging.getLogger(__name__)

DEFAULT_ATTACK = "!new:ser_adv_brain.attacks.PGD {eps: 0.04, steps: 10, eta: null}"


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    parser = parser_for("targeted", __doc__)
    parser.add_argument("folder", help="a training output folder")
    parser.add_argument("--attack", default=DEFAULT_ATTACK, help="a yaml FGSM or PGD plug-in (inline or a file)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--output_folder", default=None, help="default: the run's folder")
    add_device(parser)
    args = parser.parse_args(argv)
    output_folder = args.output_folder or args.folder
    try:
        trained = TrainedModel(args.folder, device_options(args))
    except FileNotFoundError as error:  # load_trained names the folder without a run
        sys.exit(f"targeted: {error}")
    encoder = trained.hparams["label_encoder"]
    attack = load_attack(args.attack).set_class_names(encoder)
    labels = encoder.decode_ndim(list(range(trained.hparams["n_classes"])))
    with torch.no_grad():
        batches = [(trained.brain.compute_features(wavs), targets) for _, wavs, targets in trained.batches(args.split)]
    rates = targeted_success_matrix(attack, trained.model, batches, trained.hparams["n_classes"])
    title = f"{trained.hparams['experiment_name']}: targeted {attack!r}, {args.split} (share forced into each target)"
    os.makedirs(output_folder, exist_ok=True)
    table = write_success_matrix(rates, labels, output_folder, title)
    logger.info(f"Targeted success matrix ({output_folder}/success_matrix.md):\n{table}")
    plot_success_matrix(os.path.join(output_folder, "success_matrix.csv"))
    return rates


if __name__ == "__main__":
    main()
