"""Robustness evaluation of a trained output folder: UAR on real and FGSM data over an eps grid.

Usage (any yaml key or run option can follow, as for train.py):
    python -m ser_adv_brain.evaluate_robustness results/vgg16_vanilla/1234
    python -m ser_adv_brain.evaluate_robustness results/vgg16_vanilla/1234 \
        --eval_eps="[0.0, 0.05, 0.1, 0.2]" --attack_labels=target --device=cuda:0

It reloads the experiment's own ``hyperparams.yaml`` and manifests, restores
the checkpoint its ``select_checkpoint`` names (best dev UAR by default), and rewrites ``robustness.csv``,
``robustness.md`` and the confusion matrices in that folder.
"""

import logging
import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.distributed import set_collective_timeout
from ser_adv_brain.recipe import build_brain, checked_datasets, report_robustness


def main(argv=None):
    """Parses ``OUTPUT_FOLDER [overrides]`` and runs the robustness report there."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    folder = argv[0]
    hparams_file = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(hparams_file):
        sys.exit(f"{folder!r} is not a training output folder: it has no hyperparams.yaml.")
    _, run_opts, overrides = sb.parse_arguments([hparams_file, *argv[1:]])
    # The saved yaml names its output folder relative to where training ran.
    overrides = (overrides or "") + f"\noutput_folder: {os.path.abspath(folder)}\n"
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    datasets = checked_datasets(hparams)
    set_collective_timeout(hparams)
    brain = build_brain(hparams, run_opts)
    return report_robustness(brain, hparams, datasets)


if __name__ == "__main__":
    main()
