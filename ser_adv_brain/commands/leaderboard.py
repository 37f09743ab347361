"""``ser-adv leaderboard``: the leaderboard (markdown and CSV) of the benchmark entries under a folder.

Usage:
    ser-adv leaderboard results/EmoDB_benchmark --tier=standard
    ser-adv leaderboard entries_from_other_labs/ --output_folder=leaderboard

Every ``entry.json`` under the folder (``ser_adv_brain.reports.entry``: what ``ser-adv evaluate`` and
``ser-adv benchmark`` write, or another lab's) goes into one leaderboard: per threat model and budget, the models
ranked by robust UAR, each the mean over its folds and seeds with a 95% interval. Entries evaluated otherwise than the
others (corpus, fold protocol, split, tier, budgets) are refused, naming the file and what differs
(``ser_adv_brain.reports.leaderboard``); a model evaluated on fewer folds and seeds than the others is named,
not ranked; a model that takes the waveform is ranked in the tables of the threat models it has. ``--tier``
keeps the entries of one tier only: a benchmark's folder holds each run's own entry (tier ``yaml``, the suite
its training run ended with) beside its tier's (``<run>/<tier>/entry.json``), and a smoothing run's certificates
make one of the ``certified`` tier (``ser-adv certify``; ranked by certified UAR). Writes ``leaderboard.md`` and
``leaderboard.csv`` into ``--output_folder`` (default: the folder).
"""

import logging
import sys

from ser_adv_brain.commands.arguments import parser_for
from ser_adv_brain.evaluation.tiers import TIERS
from ser_adv_brain.reports.entry import CERTIFIED_TIER, read_entries
from ser_adv_brain.reports.leaderboard import write_leaderboard

logger = logging.getLogger(__name__)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    parser = parser_for("leaderboard", __doc__)
    parser.add_argument("folder", help="a folder holding entry.json files (searched recursively)")
    parser.add_argument("--output_folder", default=None, help="default: the folder")
    parser.add_argument(
        "--tier",
        choices=[*TIERS, "yaml", CERTIFIED_TIER],
        default=None,
        help="only the entries of this tier (yaml: the runs' own; certified: ser-adv certify's)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    entries = [e for e in read_entries(args.folder) if args.tier is None or e["tier"] == args.tier]
    tiers = sorted({e["tier"] for e in entries})
    if len(tiers) > 1:
        sys.exit(f"leaderboard: {args.folder} holds entries of the tiers {tiers}; choose one with --tier.")
    if args.tier and not entries:
        sys.exit(f"leaderboard: no entry.json of the {args.tier} tier under {args.folder}.")
    try:
        markdown = write_leaderboard(entries, args.output_folder or args.folder)
    except ValueError as error:
        sys.exit(f"leaderboard: {error}")
    logger.info(f"Leaderboard:\n{markdown}")
    return markdown


if __name__ == "__main__":
    main()
