"""The robustness evaluation command: the paper's FGSM report and the attack suite, for a trained output folder.

Usage (any yaml key or run option can follow, as for train.py, but ``--output_folder``:
the results go into the folder evaluated; copy it to keep its present ones):
    python -m ser_adv_brain.evaluate_robustness results/vgg16_vanilla/1234
    python -m ser_adv_brain.evaluate_robustness results/vgg16_vanilla/1234 \
        --eval_eps="[0.0, 0.05, 0.1, 0.2]" --attack_labels=target --device=cuda:0
    python -m ser_adv_brain.evaluate_robustness results/vgg16_vanilla/1234 \
        --attacks="[!new:ser_adv_brain.attacks.FGSM {eps: 0.02, eta: null, label_source: target}]" \
        --suite_budgets="{features_linf: [0.02, 0.1]}" --suite_early_exit=False

``--attacks`` is a yaml list of attack plug-ins, inline or as the path of a
yaml file holding the list; it replaces the yaml's ``attack_suite`` (the
default suite). Each attack runs at every budget ``suite_budgets`` gives its
threat model.

It reloads the experiment's own ``hyperparams.yaml`` and manifests, restores
the checkpoint its ``select_checkpoint`` names (best dev UAR by default), and
rewrites ``robustness.csv`` (FGSM), ``attack_suite.csv`` (UAR per attack and
budget, robust UAR), ``robustness.md`` (both, and the gradient-masking checks),
the confusion matrices, a few real / adversarial wav pairs
(``adversarial_wavs/``) and the pictures (``ser_adv_brain.plots``) in that folder.
"""

import logging
import os
import sys

from ser_adv_brain.runs import attack_settings, load_trained, report_attacks
from ser_adv_brain.training.checkpoints import selection_key

ATTACKS_FLAG = "--attacks="


def attacks_override(argv):
    """Turns ``--attacks=LIST_OR_FILE`` into an ``attack_suite`` override; returns the other arguments and it."""
    rest, override = [], ""
    for arg in argv:
        if not arg.startswith(ATTACKS_FLAG):
            rest.append(arg)
            continue
        value = arg[len(ATTACKS_FLAG) :]
        if os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                value = f.read()
        indented = "\n".join("    " + line for line in value.strip().splitlines())
        override = f"attack_suite:\n{indented}\n"
    return rest, override


def main(argv=None):
    """Parses ``OUTPUT_FOLDER [overrides]`` and runs the robustness reports there."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    rest, suite_override = attacks_override(argv[1:])
    try:
        hparams, datasets, brain = load_trained(argv[0], rest, suite_override)
    except (FileNotFoundError, ValueError) as error:  # load_trained names a folder without a run, or --output_folder
        sys.exit(str(error))
    return report_attacks(brain, hparams, datasets, selection_key(hparams["select_checkpoint"]), **attack_settings(hparams))


if __name__ == "__main__":
    main()
