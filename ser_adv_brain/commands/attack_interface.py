"""``ser-adv attack-interface``: any SpeechBrain emotion classifier under the waveform attack suite, no retraining.

Usage:
    ser-adv attack-interface SOURCE MANIFEST [--pymodule_file=FILE --interface_class=NAME] [--label_map=YAML]
    ser-adv attack-interface speechbrain/emotion-recognition-wav2vec2-IEMOCAP test.csv \\
        --pymodule_file=custom_interface.py --interface_class=CustomEncoderWav2vec2Classifier \\
        --label_map="{anger: ang, happiness: hap, sadness: sad, neutral: neu, boredom: null, disgust: null, fear: null}"
    ser-adv attack-interface results/my_encoder_classifier test.csv --tier=standard --budgets="{waveform_snr: [40, 30]}"
    ser-adv attack-interface results/my_encoder_classifier test.csv --tier=audio --training_manifest=train.csv

SOURCE is a folder or a hub id that SpeechBrain loads: as an ``EncoderClassifier`` (its ``hyperparams.yaml``),
or with ``--pymodule_file`` and ``--interface_class`` through ``foreign_class`` (the file is fetched from
SOURCE). MANIFEST is a CSV with the columns ``ID``, ``wav``, ``emo`` and ``spk_id``, as the recipes write
(``test.csv``). Each utterance is attacked whole, at the interface's sample rate, one at a time.

Labels: every manifest label must be one of the interface's classes, or be mapped to one by
``--label_map`` (a yaml mapping; ``null`` leaves that label's utterances out). A label that maps to
nothing stops the command with its name.

What it can attack: an interface whose ``classify_batch(wavs)`` returns class scores
``[batch, classes]`` differentiable from the waveform tensor it is given. It checks this on the
first utterance before any attack, and refuses any other interface with a one-line reason (one that
reads files rather than tensors, decodes or rounds the audio inside, runs under ``torch.no_grad()``,
or detaches). SpeechBrain's Hugging Face wrappers loaded with ``freeze: True`` run under
``torch.no_grad()`` for speed; they are run with autograd instead (the same scores), and it says so.

The suite: the waveform attacks of a tier (``--tier``, default ``quick``; see
``ser_adv_brain.evaluation.tiers``) or ``--attacks`` (a yaml list of waveform attack plug-ins, inline or
a file), at ``--budgets`` (default: the tier's waveform budgets; with ``--attacks``,
``{waveform_snr: [40, 30, 20]}``), with early exit unless ``--suite_early_exit=False``; the
destroying-budget masking check at ``--masking_check_eps`` dB SNR. A universal perturbation (the audio
tier's) learns on ``--training_manifest``, a CSV like MANIFEST holding other utterances (the interface's
training split, say), one utterance a step; it is refused without one, and with one that shares an
utterance with MANIFEST.
It writes into ``--output_folder`` (default ``results/attack_interface/<source's last name>``):
``robustness.md`` (the suite's tables, robust UAR, realised SNRs, the masking checks),
``attack_suite.csv``, ``waveform_snr.csv``, ``confusion_test.csv`` (real data), ``classes.csv`` (the
label map), ``adversarial_wavs/``, ``universal_perturbations/`` (each learnt perturbation, as a run keeps
them) and the pictures.
"""

import logging
import os
import sys

import yaml

from ser_adv_brain.commands.arguments import add_device, load_attacks, parser_for, yaml_budgets
from ser_adv_brain.data.validation import DataValidationError
from ser_adv_brain.evaluation.suite import suite_entries, unfit_budgets
from ser_adv_brain.evaluation.tiers import TIERS, tier_attacks, tier_budgets
from ser_adv_brain.interface.pretrained_classifier import PretrainedClassifier, load_interface, unfreeze_wrappers
from ser_adv_brain.runs.interface_attack import attack_interface, manifest_rows

logger = logging.getLogger(__name__)

ATTACKS_BUDGETS = "{waveform_snr: [40, 30, 20]}"  # --budgets' default with --attacks (a tier has its own)


def parse_arguments(argv):
    parser = parser_for("attack-interface", __doc__)
    parser.add_argument("source", help="a SpeechBrain interface: a folder or a hub id")
    parser.add_argument("manifest", help="a CSV manifest (ID, wav, emo, spk_id)")
    parser.add_argument("--pymodule_file", default=None, help="the source's Python file defining the interface")
    parser.add_argument("--interface_class", default=None, help="the interface's class in --pymodule_file")
    parser.add_argument("--savedir", default=None, help="where SpeechBrain keeps what it fetches (its default cache)")
    parser.add_argument("--label_map", default=None, help="yaml: manifest label -> interface label or null")
    suite = parser.add_mutually_exclusive_group()
    suite.add_argument("--tier", choices=TIERS, default="quick", help="the tier whose waveform attacks run")
    suite.add_argument("--attacks", default=None, help="a yaml list of waveform attack plug-ins (inline or a file)")
    parser.add_argument(
        "--budgets", default=None, help=f"yaml: threat model -> budgets (the tier's; {ATTACKS_BUDGETS} with --attacks)"
    )
    parser.add_argument("--training_manifest", default=None, help="a CSV manifest a universal perturbation learns on")
    parser.add_argument("--suite_early_exit", default="True", choices=("True", "False"))
    parser.add_argument("--masking_check_eps", type=float, default=-20.0, help="an SNR in dB that destroys the input")
    parser.add_argument("--output_folder", default=None)
    add_device(parser)
    args = parser.parse_args(argv)
    if args.budgets is None:
        args.budgets = ATTACKS_BUDGETS if args.attacks else tier_budgets(args.tier, "waveform")
    args.budgets = yaml_budgets(args.budgets, "--budgets")
    if args.label_map is not None:
        args.label_map = yaml.safe_load(args.label_map)
        if not isinstance(args.label_map, dict):
            parser.error('--label_map must be a yaml mapping like "{anger: ang, boredom: null}"')
        args.label_map = {str(k): None if v is None else str(v) for k, v in args.label_map.items()}
    return args


def main(argv=None):
    """Parses the arguments, loads and checks the interface, runs the waveform suite; returns its outcomes."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    # Named by their options, and before the interface loads (a hub download, a large encoder).
    for option, path in (("MANIFEST", args.manifest), ("--training_manifest", args.training_manifest)):
        if path is not None and not os.path.isfile(path):
            sys.exit(f"attack-interface: {option} {path}: no such file")
    device = args.device or "cpu"
    output_folder = args.output_folder or os.path.join(
        "results", "attack_interface", os.path.basename(os.path.normpath(args.source))
    )
    try:
        interface = load_interface(args.source, args.savedir, args.interface_class, args.pymodule_file, device)
    except (ValueError, OSError) as error:  # a wrong option, a missing folder or file, an unreachable hub
        sys.exit(f"attack-interface: cannot load {args.source}: {error}")
    unfrozen = unfreeze_wrappers(interface)
    if unfrozen:
        logger.info(f"Frozen Hugging Face wrappers {unfrozen} run with autograd, so gradients reach the waveform.")
    if getattr(interface.hparams, "label_encoder", None) is None:
        sys.exit(f"attack-interface: {args.source} cannot be attacked: it has no label_encoder to name its classes.")
    classifier = PretrainedClassifier(interface)
    rate = interface.audio_normalizer.sample_rate
    attacks = (
        load_attacks(args.attacks)
        if args.attacks
        else tier_attacks(args.tier, domain="waveform", output_folder=output_folder, sample_rate=rate)
    )
    try:
        entries = suite_entries(attacks)
    except (ValueError, TypeError) as error:  # --attacks holds what the suite cannot run, named
        sys.exit(f"attack-interface: {error}")
    problem = unfit_budgets(entries, args.budgets)
    if problem:  # before the first utterance is attacked
        sys.exit(f"attack-interface: --budgets: {problem}")
    os.makedirs(output_folder, exist_ok=True)
    try:
        first = manifest_rows(args.manifest, output_folder, rate)[0]
    except DataValidationError as error:
        sys.exit(f"attack-interface: {error}")
    wav = interface.load_audio(first["wav"]).unsqueeze(0)  # the interface's own reading: rate and channels
    problem = classifier.gradient_problem(wav, n_classes=len(interface.hparams.label_encoder))
    if problem:
        sys.exit(f"attack-interface: {args.source} cannot be attacked: {problem}.")
    try:
        return attack_interface(
            classifier,
            args.manifest,
            attacks,
            args.budgets,
            output_folder,
            label_map=args.label_map,
            early_exit=args.suite_early_exit == "True",
            masking_check_eps=args.masking_check_eps,
            device=device,
            title=f"{args.source} ({type(interface).__name__})",
            training_manifest=args.training_manifest,
        )
    except (ValueError, TypeError) as error:  # the label map, the attacks and the manifest name their culprit
        sys.exit(f"attack-interface: {error}")


if __name__ == "__main__":
    main()
