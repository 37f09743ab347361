"""``ser-adv transfer``: transfer attacks (black box), fake data made on each source model, scored by every target.

Usage:
    ser-adv transfer results/EmoDB/cnn4_single/1234 results/EmoDB/cnn4_vanilla/1234 results/EmoDB/cnn4_similarity/1234
    ... --attack="!new:ser_adv_brain.attacks.FGSM {eps: 0.02, eta: null, label_source: target}" --eps="[0.02, 0.1]"

Options (after the folders): ``--attack`` (a yaml attack plug-in, inline or a file; default: the first
white-box attack of the first folder's ``attack_suite``), ``--eps`` (a yaml list of budgets; default: that
attack's threat model's ``suite_budgets`` in the first folder), ``--split`` (``test``), ``--output_folder``
(``<first folder>/transfer``), ``--device``.

Each folder's model is the checkpoint its ``select_checkpoint`` names. Each source's fake data are made
once per budget, on the split's utterances (true labels), and every target scores them: ``transfer.csv``,
``transfer.md`` and ``transfer.png`` (a heatmap) give the N x N UAR matrix per budget (rows: source,
columns: target; the diagonal is the white-box attack). Feature-domain fake data go from one model to
another as log-Mel features (each model's own normaliser applies), so the folders must share their
feature settings and the split's utterances.
"""

import logging
import os
import sys

from ser_adv_brain.commands.arguments import add_device, device_options, load_attack, parser_for, yaml_floats
from ser_adv_brain.evaluation.suite import suite_entries
from ser_adv_brain.evaluation.transfer import check_compatible, transfer_matrix
from ser_adv_brain.reports.plots import plot_transfer
from ser_adv_brain.reports.transfer_report import write_transfer_report
from ser_adv_brain.runs.reload import TrainedModel

logger = logging.getLogger(__name__)


def main(argv=None):
    """Parses ``FOLDER FOLDER ... [options]``, makes and scores the fake data, writes the matrix."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    parser = parser_for("transfer", __doc__)
    parser.add_argument("folders", nargs="+", help="training output folders (two or more)")
    parser.add_argument("--attack", default=None, help="a yaml attack plug-in (inline or a file)")
    parser.add_argument("--eps", default=None, help="a yaml list of budgets")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--output_folder", default=None, help="default: <first folder>/transfer")
    add_device(parser)
    args = parser.parse_args(argv)
    if len(args.folders) < 2:
        parser.error("give at least two training output folders")
    output_folder = args.output_folder or os.path.join(args.folders[0], "transfer")
    try:
        models = [TrainedModel(folder, device_options(args)) for folder in args.folders]
    except FileNotFoundError as error:  # load_trained names the folder without a run
        sys.exit(f"transfer: {error}")
    first = models[0].hparams
    if args.attack is None:
        entries = [e for e in suite_entries(first["attack_suite"]) if e.attack.kind != "black-box"]
        if not entries:
            sys.exit(f"{args.folders[0]}: attack_suite has no white-box attack: give --attack.")
        attack, threat = entries[0].attack, entries[0].threat_model
    else:
        attack = load_attack(args.attack)
        threat = attack.threat_model
    attack.set_class_names(first["label_encoder"])  # a targeted attack names its class
    eps_grid = yaml_floats(args.eps, "--eps") if args.eps else first["suite_budgets"][threat]
    try:
        check_compatible(models, args.split, attack.domain)
    except ValueError as error:
        sys.exit(f"transfer: {error}")
    matrices, real = transfer_matrix(models, attack, [float(e) for e in eps_grid], args.split)
    table = write_transfer_report(matrices, real, attack, args.folders, output_folder, args.split)
    logger.info(f"Transfer matrix ({output_folder}/transfer.md):\n{table}")
    plot_transfer(os.path.join(output_folder, "transfer.csv"))
    return matrices, real


if __name__ == "__main__":
    main()
