"""``ser-adv``: the toolkit's command-line tool, one subcommand per job on trained runs and grids of runs.

    ser-adv evaluate RUN            the paper's FGSM report and the attack suite (or a tier) on a trained run
    ser-adv transfer RUN RUN ...    transfer attacks between trained runs: the source x target UAR matrix
    ser-adv targeted RUN            the targeted success matrix: which emotion can be forced into which
    ser-adv certify RUN             randomised smoothing: certified UAR against radius, and its adaptive attack
    ser-adv detector RUN YAML       trains, tests and exports a fake-data detector for a trained run
    ser-adv sweep RECIPE            the paper's grid of runs (models x trainings x eps), resumable, its table
    ser-adv benchmark RECIPE        trainings x speaker folds x seeds, evaluated in a tier, with intervals
    ser-adv leaderboard FOLDER      the leaderboard of the benchmark entries under a folder
    ser-adv attack-interface SOURCE MANIFEST   any SpeechBrain emotion interface under the waveform attack suite

``ser-adv <subcommand> --help`` says more. Every subcommand shares ``--device`` and ``--output_folder``,
takes lists and attack plug-ins as yaml, and yaml keys as ``--key=value`` (``ser_adv_brain.commands.arguments``).
The recipes stay SpeechBrain scripts: ``python recipes/<corpus>/train.py <yaml>``.
"""

import importlib
import sys

SUBCOMMANDS = (
    "evaluate",
    "transfer",
    "targeted",
    "certify",
    "detector",
    "sweep",
    "benchmark",
    "leaderboard",
    "attack-interface",
)


def main(argv=None):
    """Runs ``ser-adv <subcommand> [arguments]``; returns None, the console script's exit status 0.

    A subcommand's own ``main`` returns its results to Python callers; they are not an exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return None
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        sys.exit(
            f"ser-adv: unknown subcommand {name!r}; the subcommands are {', '.join(SUBCOMMANDS)} (ser-adv --help)."
        )
    importlib.import_module(f"ser_adv_brain.commands.{name.replace('-', '_')}").main(rest)
    return None


if __name__ == "__main__":
    main()
