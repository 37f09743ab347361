"""``ser-adv certify``: randomised smoothing's certificates for a trained run, and its adaptive attack.

Usage (any yaml key or run option of the run can follow, as for train.py):
    ser-adv certify results/EmoDB/cnn4_smoothing_waveform/1234
    ser-adv certify results/EmoDB/cnn4_smoothing_waveform/1234 --sigma=0.5 --n=10000 --splits=valid,test \\
        --output_folder=results/EmoDB/cnn4_smoothing_waveform/1234/sigma0.5
    ser-adv certify results/EmoDB/cnn4_single/1234 --domain=waveform --sigma=0.25
    ser-adv certify results/EmoDB/cnn4_smoothing_waveform/1234 --tier=rand --budgets="{waveform_snr: [40]}"

The smoothed classifier is the run's ``smoothing`` (``ser_adv_brain.evaluation.smoothing.RandomizedSmoothing``,
in the ``cnn4_smoothing_*`` yaml files) with ``--sigma``, ``--n0``, ``--n``, ``--alpha`` and ``--batch_size``
(noisy copies per forward pass) replacing its own; a run trained without it needs ``--domain`` and ``--sigma``.
The base classifier is the checkpoint ``select_checkpoint`` names. CERTIFY runs on every utterance of
``--splits`` (default test); with ``--tier`` (``rand``: AutoAttack's rand version, expectation over 20 noise
draws per gradient) or ``--attacks`` (a yaml list of attack plug-ins, inline or a file), the attacks of the
smoothing's domain also attack the smoothed classifier, each at the budgets of its threat model
(``--budgets``, or the run's ``suite_budgets``), scored by PREDICT. The attacks see the base classifier with
fresh noise at every forward pass, each pass the mean softmax of ``--draws`` noisy copies (default 8;
``ser_adv_brain.evaluation.certification``). The rand tier's APGD-CE (100 steps, gradients averaged over 20
passes) then costs 100 x 20 x 8 = 16,000 forward and backward passes of the model per utterance and budget:
on a CPU, give ``--attacks`` with fewer steps and passes.

It writes into ``--output_folder`` (default: the run's folder, whose certificates it rewrites):
``certificates.csv``, ``certified_uar.csv``, ``certified_uar.png``, ``certification.md`` and, with attacks,
``smoothed_attack.csv`` (``ser_adv_brain.reports.certification_report``); with the test split, its benchmark
entry ``certified/entry.json`` (``ser_adv_brain.reports.entry``; ``ser-adv benchmark --report_only
--tier=certified`` aggregates such entries over folds). Certificates already made there
for the same checkpoint, smoothing and code (``certificates_progress_<split>.json``, which training leaves
too) are read back, not voted again: adding ``--attacks`` to a finished smoothing run costs the attack alone.
"""

import logging
import sys

from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.commands.arguments import add_device, device_options, parser_for, text_or_file, yaml_budgets
from ser_adv_brain.evaluation.smoothing import SMOOTHING_DOMAINS, RandomizedSmoothing
from ser_adv_brain.evaluation.tiers import TIERS, tier_attacks
from ser_adv_brain.runs import load_trained, report_certificates
from ser_adv_brain.runs.certificates import smoothing_plan
from ser_adv_brain.training.checkpoints import selection_key

OPTIONS = ("sigma", "n0", "n", "alpha", "batch_size")


def parse_arguments(argv):
    parser = parser_for("certify", __doc__)
    parser.add_argument("folder", help="a training output folder")
    parser.add_argument("--sigma", type=float, default=None, help="the noise's standard deviation (default: the run's)")
    parser.add_argument("--n0", type=int, default=None, help="votes that choose the class (default: the run's)")
    parser.add_argument("--n", type=int, default=None, help="votes that bound its probability (default: the run's)")
    parser.add_argument("--alpha", type=float, default=None, help="the certificate's failure probability")
    parser.add_argument("--batch_size", type=int, default=None, help="noisy copies per forward pass")
    parser.add_argument(
        "--domain", choices=SMOOTHING_DOMAINS, default=None, help="where the noise goes, for a run without smoothing"
    )
    parser.add_argument("--splits", default="test", help="the splits to certify, comma-separated (default test)")
    attacks = parser.add_mutually_exclusive_group()
    attacks.add_argument("--tier", choices=TIERS, default=None, help="attack the smoothed classifier with a tier")
    attacks.add_argument("--attacks", default=None, help="a yaml list of attack plug-ins (inline or a file)")
    parser.add_argument("--budgets", default=None, help="a yaml mapping of threat models to budgets")
    parser.add_argument(
        "--draws", type=int, default=8, help="noisy copies averaged in each forward pass of the attacks (default 8)"
    )
    parser.add_argument("--output_folder", default=None, help="default: the run's folder")
    add_device(parser)
    args, rest = parser.parse_known_args(argv)
    args.splits = args.splits.split(",")
    if not args.splits or not set(args.splits) <= {"valid", "test"}:
        parser.error(f"--splits takes valid, test or valid,test; got {','.join(args.splits)!r}")
    if args.budgets is not None:
        args.budgets = yaml_budgets(args.budgets, "--budgets")
    return args, rest


def smoothing_of(hparams, args):
    """The run's smoothing with the command's options, or one made of ``--domain`` and ``--sigma``."""
    options = {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}
    smoothing = hparams.get("smoothing")
    if smoothing is None:
        if args.domain is None or args.sigma is None:
            raise ValueError(
                "the run has no smoothing (its yaml has no 'smoothing' key): give --domain and --sigma "
                "(a base classifier trained without noise certifies little)."
            )
        return RandomizedSmoothing(domain=args.domain, **options)
    if args.domain is not None and args.domain != smoothing.domain:
        raise ValueError(f"--domain={args.domain}, but the run's {smoothing!r} was trained with its noise there.")
    return smoothing.with_options(**options)


def main(argv=None):
    """Parses ``FOLDER [options] [yaml overrides]``, certifies and writes the report."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    args, rest = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        hparams, datasets, brain = load_trained(args.folder, [*rest, *device_options(args)])
        smoothing = smoothing_of(hparams, args)
    except (FileNotFoundError, ValueError) as error:  # load_trained names a folder without a run
        sys.exit(f"certify: {error}")
    if args.tier:
        attacks = tier_attacks(args.tier, output_folder=hparams["output_folder"], sample_rate=hparams["sample_rate"])
    elif args.attacks:
        attacks = load_hyperpyyaml(f"attacks: {text_or_file(args.attacks)}")["attacks"]
    else:
        attacks = []
    budgets = hparams["suite_budgets"] if args.budgets is None else args.budgets
    try:  # before any certificate: every attack is of the smoothing's domain's threat models, with budgets
        for attack in attacks:
            attack.set_class_names(hparams["label_encoder"])
        plan = smoothing_plan(smoothing, attacks, budgets) if attacks else []
    except ValueError as error:
        sys.exit(f"certify: {'--budgets: ' if args.budgets else ''}{error}")
    return report_certificates(
        brain,
        hparams,
        datasets,
        selection_key(hparams["select_checkpoint"]),
        smoothing,
        splits=tuple(args.splits),
        output_folder=args.output_folder or args.folder,
        plan=plan,
        budgets=budgets,
        attack_draws=args.draws,
    )


if __name__ == "__main__":
    main()
