"""``ser-adv evaluate``: the paper's FGSM report and the attack suite, for a trained output folder.

Usage (any yaml key or run option of the run can follow, as for train.py):
    ser-adv evaluate results/vgg16_vanilla/1234
    ser-adv evaluate results/vgg16_vanilla/1234 --eval_eps="[0.0, 0.05, 0.1, 0.2]" --attack_labels=target \\
        --device=cuda:0
    ser-adv evaluate results/EmoDB_benchmark/cnn4_trades/fold0-seed1234 --tier=standard --splits=test \\
        --budgets="{features_linf: [0.02, 0.04], waveform_snr: [40]}"
    ser-adv evaluate results/vgg16_vanilla/1234 \\
        --attacks="[!new:ser_adv_brain.attacks.FGSM {eps: 0.02, eta: null, label_source: target}]" \\
        --suite_budgets="{features_linf: [0.02, 0.1]}" --suite_early_exit=False

The suite is the run's own ``attack_suite``, a tier (``--tier``: ``quick``, ``standard``, ``rand``,
``audio``; see ``ser_adv_brain.evaluation.tiers``), or ``--attacks``, a yaml list of attack plug-ins, inline
or as the path of a yaml file holding the list. Each attack runs at every budget ``suite_budgets`` gives its
threat model: the run's own, or the tier's with ``--tier`` (for a model that takes the waveform, a
self-supervised encoder's, the tier's waveform attacks and budgets: it has no features); ``--budgets``
replaces them as a whole, and is refused before any attack if it misses a threat model of the suite or names
one no attack perturbs (``--suite_budgets``, a yaml override as for train.py, updates only the threat models
it names, as SpeechBrain merges overrides).

It reloads the run's own ``hyperparams.yaml`` and manifests, restores the checkpoint its
``select_checkpoint`` names (best dev UAR by default), and writes into ``--output_folder`` (default: the
run's folder, whose reports it rewrites; ``<run>/<tier>`` with ``--tier``): ``robustness.csv`` (FGSM),
``attack_suite.csv`` (UAR per attack and budget, robust UAR), ``robustness.md`` (both, and the
gradient-masking checks), the confusion matrices, a few real / adversarial wav pairs
(``adversarial_wavs/``), the pictures (``ser_adv_brain.reports.plots``) and, with the test split, the
model's benchmark entry ``entry.json`` (``ser_adv_brain.reports.entry``). A universal perturbation of the suite
is learnt on the run's training split first, or read back from the run's ``universal_perturbations/`` where an
earlier evaluation kept it (``ser_adv_brain.evaluation.universal``). A killed evaluation, run again with the
same command, attacks only the batches it had not finished (``ser_adv_brain.evaluation.progress``).
"""

import json
import logging
import os
import sys

from ser_adv_brain.commands.arguments import add_device, device_options, parser_for, text_or_file, yaml_budgets
from ser_adv_brain.commands.grid import yaml_model_takes_waveform
from ser_adv_brain.evaluation.suite import suite_entries, unfit_budgets
from ser_adv_brain.evaluation.tiers import TIERS, tier_attacks, tier_budgets
from ser_adv_brain.runs import attack_settings, load_trained, report_attacks
from ser_adv_brain.training.checkpoints import selection_key


def suite_override(attacks_yaml):
    """The yaml that replaces the run's ``attack_suite`` by a list of attacks (yaml text)."""
    indented = "\n".join("    " + line for line in attacks_yaml.strip().splitlines())
    return f"attack_suite:\n{indented}\n"


def parse_arguments(argv):
    parser = parser_for("evaluate", __doc__)
    parser.add_argument("folder", help="a training output folder")
    suite = parser.add_mutually_exclusive_group()
    suite.add_argument("--tier", choices=TIERS, default=None, help="a named composition of the suite")
    suite.add_argument("--attacks", default=None, help="a yaml list of attack plug-ins (inline or a file)")
    parser.add_argument(
        "--splits", default="valid,test", help="the splits to evaluate, comma-separated (default valid,test)"
    )
    parser.add_argument(
        "--budgets", default=None, help="a yaml mapping that replaces the run's suite_budgets as a whole"
    )
    parser.add_argument("--output_folder", default=None, help="default: the run's folder (<run>/<tier> with --tier)")
    add_device(parser)
    args, rest = parser.parse_known_args(argv)
    # A model that takes the waveform has no features: a tier reaches it with its waveform attacks only.
    saved = os.path.join(args.folder, "hyperparams.yaml")
    takes_waveform = args.tier and os.path.isfile(saved) and yaml_model_takes_waveform(saved)
    args.domain = "waveform" if takes_waveform else None
    if args.tier and args.budgets is None:
        args.budgets = tier_budgets(args.tier, args.domain)
    if args.budgets is not None:
        args.budgets = yaml_budgets(args.budgets, "--budgets")
    args.splits = args.splits.split(",")
    if not args.splits or not set(args.splits) <= {"valid", "test"}:
        parser.error(f"--splits takes valid, test or valid,test; got {','.join(args.splits)!r}")
    return args, rest


def main(argv=None):
    """Parses ``FOLDER [options] [yaml overrides]`` and runs the robustness reports."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    args, rest = parse_arguments(sys.argv[1:] if argv is None else argv)
    override = suite_override(text_or_file(args.attacks)) if args.attacks else ""
    if args.budgets is not None:
        # Merged into the run's own at loading, whose checks read them; replaced as a whole below.
        override += f"\nsuite_budgets: {json.dumps(args.budgets)}\n"
    try:
        hparams, datasets, brain = load_trained(args.folder, [*rest, *device_options(args)], override)
    except (FileNotFoundError, ValueError) as error:  # load_trained names a folder without a run
        sys.exit(f"evaluate: {error}")
    if args.tier:
        attacks = tier_attacks(args.tier, args.domain, hparams["output_folder"], hparams["sample_rate"])
        hparams["attack_suite"] = [attack.set_class_names(hparams["label_encoder"]) for attack in attacks]
    if args.budgets is not None:
        hparams["suite_budgets"] = args.budgets
        # Before the FGSM report's hour: every threat model of the suite has its budgets, and every budget an attack.
        problem = unfit_budgets(suite_entries(hparams["attack_suite"]), args.budgets)
        if problem:
            sys.exit(f"evaluate: --budgets: {problem}")
    output_folder = args.output_folder or (os.path.join(args.folder, args.tier) if args.tier else args.folder)
    return report_attacks(
        brain,
        hparams,
        datasets,
        selection_key(hparams["select_checkpoint"]),
        **attack_settings(hparams),
        splits=tuple(args.splits),
        output_folder=output_folder,
        tier=args.tier,
    )


if __name__ == "__main__":
    main()
