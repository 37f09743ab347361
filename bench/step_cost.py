#!/usr/bin/env python3
"""Cost of one adversarial training step against one single-training step, measured side by side.

For each model, a single-training Brain and one adversarial Brain per
objective and attack mode are built from the recipe's yaml files
(``hparams/<model>_{single,vanilla,similarity}.yaml``, width and attack options
overridden as on the recipe's command line, warm-up disabled) and
``brain.fit_batch`` is timed on one fixed synthetic batch of the paper's
input size (64 mels x 373 frames, batch 16). The Brains take turns
(round-robin), the first rounds are discarded, and the table gives the median
over rounds of each step's time divided by the single step's time of the same
round. On CPU the default clock is this process's CPU time and glibc's
malloc keeps freed memory (``--clock``, ``--malloc``; see ``common.py``), so
that other processes on shared cores and page faults do not blur the ratios.

Targets (issue 3) and floors, in forward-pass units (a backward costs about
two forwards, an input-only backward about one; single training costs 3):

- fused (target labels, train-mode attack, real branch trained by
  ``w * L(x)`` only): 2 forwards + 2 backwards = 6 units, floor 2.0x, target 2.1x;
- train-mode attack otherwise: + an input-only backward = 7 units, floor 2.33x, target 2.45x;
- eval-mode attack (the authors' mode): + an eval forward = 8 units, floor 2.67x, target 2.8x.

Stronger training (issue 9, ``hparams/<model>_{pgd,fast,trades}.yaml``): PGD-k,
fast training (FGSM from a random start) and TRADES (KL-PGD-k), each against
the floor of its method (``stronger_floor``): 6 units for the real and fake
passes, 2 per attack step, 1 for the clean labels of an eval-mode attack on
predicted labels (or TRADES's p(x)). Target: within 5% of the floor on the GPU;
on the CPU the ratio is stated.

Waveform-domain training (issue 20, ``recipes/EmoDB/hparams/<model>_waveform_
{vanilla,similarity,trades}.yaml``, the only ones that ship): the same methods
with the attack on the samples at 40 dB SNR (waveform PGD-k, KL-PGD-k), against
the same floor in model passes, stated (no target). Each attack step also runs
the log-Mel and its backward, and the twin one more log-Mel, which the floor
leaves out: the column ``vs`` divides the step's time by that of the
feature-domain step with the same attack steps, objective and mode (named in
it), measured in the same rounds.

Training in simulated rooms (issue 20, ``recipes/EmoDB/hparams/cnn4_{rooms,waveform_trades_rooms}.yaml``):
room augmentation as a noise baseline (``WaveformNoiseStep``: the real batch and its recordings, 2 forwards
and 2 backwards, floor 2.0x), beside the raw-audio noise baseline whose step differs only by the noise; and
waveform TRADES on each batch concatenated with its recordings (the yaml's ``wav_augment``), whose floor is
waveform TRADES's times the augmenter's batch factor (measured: 2 with ``concat_original``), beside
waveform TRADES without rooms; and its control (``cnn4_waveform_trades_noise.yaml``: white noise for the
rooms, the same batch factor). The room's convolution and noise are outside the floors; ``vs`` compares
each with the row it adds the rooms (or the noise) to.

``--attack-steps`` sets k (3 by default; the yaml files train with 5).

Run from the repository root (about 150 s of CPU time on 1 thread, 3 minutes on idle cores):
    PYTHONPATH=. python bench/step_cost.py
On a GPU, at the paper's width:
    PYTHONPATH=. python bench/step_cost.py --device cuda --precision bf16
"""

import copy
import os
import statistics

from common import (
    REPO,
    argument_parser,
    first_batch,
    make_brain,
    output_folder,
    parse_arguments,
    round_robin,
    synthetic_dataset,
)

from ser_adv_brain.attacks import KLPGD
from ser_adv_brain.training_steps import FusedAdversarialStep, NoiseStep

# Attack options of the yaml files: (label source, model mode while generating).
ATTACK_MODES = {
    "target/train": {"attack_labels": "target", "attack_mode": "train"},
    "predicted/train": {"attack_labels": "predicted", "attack_mode": "train"},
    "predicted/eval": {"attack_labels": "predicted", "attack_mode": "eval"},
}

# (row label, hparams suffix, extra overrides, attack modes measured)
OBJECTIVES = [
    ("vanilla", "vanilla", {}, list(ATTACK_MODES)),
    ("similarity", "similarity", {}, list(ATTACK_MODES)),
    ("similarity, v detached", "similarity", {"detach_real_embedding": True}, ["target/train"]),
]

# Stronger adversarial training (issue 9): (row label, hparams suffix, whether its attack takes
# --attack-steps steps (the yaml's training_steps; {k} in the label), attack modes measured).
# target/train is Madry's and Wong's mode; predicted/eval the authors' (it needs the clean labels first).
STRONGER = [
    ("PGD-{k}", "pgd", True, ["target/train", "predicted/eval"]),
    ("fast (FGSM, random start)", "fast", False, ["target/train", "predicted/eval"]),
    ("TRADES, KL-PGD-{k}", "trades", True, ["predicted/eval"]),
]
STRONGER_TARGET = 1.05  # target: within 5% of the method's pass-count floor (on the GPU)

# Waveform-domain training (issue 20): (row label, hparams suffix, hparams folder, attack modes measured,
# the STRONGER row with the same attack and objective, or None); every attack takes --attack-steps steps.
# The yaml files ship with the EmoDB recipe, whose front end and CNN-4 are those of hparams/; sizes are
# overridden as for every row.
WAVEFORM_HPARAMS_DIR = os.path.join(REPO, "recipes", "EmoDB", "hparams")
WAVEFORM = [
    ("waveform PGD-{k}", "waveform_vanilla", WAVEFORM_HPARAMS_DIR, ["target/train", "predicted/eval"], "PGD-{k}"),
    ("waveform PGD-{k}, similarity", "waveform_similarity", WAVEFORM_HPARAMS_DIR, ["predicted/eval"], None),
    (
        "waveform TRADES, KL-PGD-{k}",
        "waveform_trades",
        WAVEFORM_HPARAMS_DIR,
        ["predicted/eval"],
        "TRADES, KL-PGD-{k}",
    ),
]

# Training in rooms (issue 20) and its control, as WAVEFORM (hparams folder None: --hparams-dir; attack mode
# "-": no attack), each compared with the row it adds the rooms or the noise to.
ROOMS = [
    ("raw-audio noise", "raw_noise", None, ["-"], None),
    ("rooms", "rooms", WAVEFORM_HPARAMS_DIR, ["-"], "raw-audio noise"),
    (
        "waveform TRADES in rooms, KL-PGD-{k}",
        "waveform_trades_rooms",
        WAVEFORM_HPARAMS_DIR,
        ["predicted/eval"],
        "waveform TRADES, KL-PGD-{k}",
    ),
    (
        "waveform TRADES with noise (the control), KL-PGD-{k}",
        "waveform_trades_noise",
        WAVEFORM_HPARAMS_DIR,
        ["predicted/eval"],
        "waveform TRADES, KL-PGD-{k}",
    ),
]
NOISE_FLOOR = 2.0  # a noise baseline's step: real and noisy forwards and their backward, 6 units

# How the Brain runs a step -> (floor, target) as multiples of a single-training step.
PATH_BOUNDS = {
    "fused": (2.0, 2.1),
    "train-mode input pass": (7 / 3, 2.45),
    "eval-mode input pass": (8 / 3, 2.8),
}


def stronger_floor(brain):
    """The pass-count floor of a PGD-k / fast / TRADES step, in single-training steps (3 units).

    Real and fake forwards (2 units) and the backward of both branches (4),
    plus the attack's k gradient passes (a forward and an input-only backward
    each, 2 units), plus one forward for the clean labels when the attack needs
    them in eval mode (predicted labels, or TRADES's p(x)); in train mode the
    real forward could give them.
    """
    attack = brain.hparams.training_attack
    needs_labels = attack.model_mode == "eval" and (attack.label_source == "predicted" or isinstance(attack, KLPGD))
    return (6 + 2 * attack.steps * attack.restarts + int(needs_labels)) / 3


def step_path(brain):
    """Which of the adversarial training steps (``ser_adv_brain.training_steps``) this Brain's options select."""
    if isinstance(brain.hparams.training_step, FusedAdversarialStep):
        return "fused"
    return f"{brain.hparams.attack.model_mode}-mode input pass"


def measure_model(args, model, folder):
    """Builds the model's Brains and times their training steps round-robin.

    Returns
    -------
    list of dict
        One row per configuration (single first): median step time and the
        median over rounds of its ratio to the single step of the same round.
    """
    single, hparams = make_brain(args, f"{model}_single", {}, folder)
    dataset = synthetic_dataset(hparams, args.batch_size, args.seed)
    batch = first_batch(dataset, args.batch_size, args.device)
    brains = {("single", "-"): single}
    for label, suffix, overrides, modes in OBJECTIVES:
        for mode in modes:
            brains[(label, mode)], _ = make_brain(
                args, f"{model}_{suffix}", {**overrides, **ATTACK_MODES[mode], "warmup_steps": 0}, folder
            )
    steps = {"training_steps": args.attack_steps}
    for label, suffix, iterative, modes in STRONGER:
        if not os.path.isfile(os.path.join(args.hparams_dir, f"{model}_{suffix}.yaml")):
            continue  # these yaml files ship for CNN-4 only (docs/defences.md)
        for mode in modes:
            options = {**(steps if iterative else {}), **ATTACK_MODES[mode], "warmup_steps": 0}
            brains[(label.format(k=args.attack_steps), mode)], _ = make_brain(
                args, f"{model}_{suffix}", options, folder
            )
    for label, suffix, folder_of_yaml, modes, _ in WAVEFORM + ROOMS:
        if not os.path.isfile(os.path.join(folder_of_yaml or args.hparams_dir, f"{model}_{suffix}.yaml")):
            continue
        for mode in modes:
            attack_options = {**steps, **ATTACK_MODES[mode]} if mode in ATTACK_MODES else {}
            options = {**attack_options, "warmup_steps": 0, "data_folder": folder}
            brains[(label.format(k=args.attack_steps), mode)], _ = make_brain(
                args, f"{model}_{suffix}", options, folder, folder_of_yaml
            )
    for brain in brains.values():
        # The recipe's own normaliser fit, on the benchmark data (z-scored inputs, as in training).
        brain.fit_normalizer(dataset, {"batch_size": args.batch_size})
    # Each step gets its own copy of the batch object: wav_augment replaces its audio, labels and IDs in place.
    times = round_robin(
        {name: (lambda brain=brain: brain.fit_batch(copy.copy(batch))) for name, brain in brains.items()},
        args.steps,
        args.warmup,
        args.device,
        args.clock,
    )
    single_times = times[("single", "-")]
    rows = []
    for (label, mode), brain in brains.items():
        if hasattr(brain.hparams, "training_attack"):
            path = type(brain.hparams.training_step).__name__
            floor = stronger_floor(brain) * batch_factor(brain, batch)
            # No target for a waveform step: its floor leaves the front end out (see vs).
            target = STRONGER_TARGET * floor if brain.hparams.training_attack.domain == "features" else None
        elif isinstance(brain.hparams.training_step, NoiseStep):
            path, floor, target = type(brain.hparams.training_step).__name__, NOISE_FLOOR, None
        else:
            path = "-" if brain is single else step_path(brain)
            floor, target = PATH_BOUNDS.get(path, (None, None))
        rows.append(
            {
                "model": model,
                "objective": label,
                "labels/mode": mode,
                "path": path,
                "ms": 1000 * statistics.median(times[(label, mode)]),
                "samples_per_s": args.batch_size / statistics.median(times[(label, mode)]),
                "ratio": statistics.median(t / s for t, s in zip(times[(label, mode)], single_times)),
                "floor": floor,
                "target": target,
                "vs": None,
            }
        )
    by_key = {(row["objective"], row["labels/mode"]): row for row in rows}
    for label, _, _, modes, reference in WAVEFORM + ROOMS:
        if reference is None:
            continue
        label, reference = label.format(k=args.attack_steps), reference.format(k=args.attack_steps)
        for mode in modes:
            if (label, mode) in by_key and (reference, mode) in by_key:
                ratios = (t / f for t, f in zip(times[(label, mode)], times[(reference, mode)]))
                by_key[(label, mode)]["vs"] = f"{statistics.median(ratios):.2f} ({reference})"
    return rows


def batch_factor(brain, batch):
    """How many times the batch the training step sees: the yaml's ``wav_augment`` may add copies."""
    if not hasattr(brain.hparams, "wav_augment"):
        return 1
    augmented = copy.copy(batch)
    brain.augment_batch(augmented, brain.hparams.wav_augment)
    return len(augmented.id) / len(batch.id)


def print_table(rows):
    """A markdown table, one row per model and configuration."""
    columns = [
        "model",
        "objective",
        "labels/mode",
        "path",
        "step ms",
        "samples/s",
        "ratio",
        "floor",
        "target",
        "met",
        "vs",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        bounded = row["target"] is not None
        cells = [
            row["model"],
            row["objective"],
            row["labels/mode"],
            row["path"],
            f"{row['ms']:.1f}",
            f"{row['samples_per_s']:.0f}",
            f"{row['ratio']:.2f}",
            "" if row["floor"] is None else f"{row['floor']:.2f}",
            f"{row['target']:.2f}" if bounded else "",
            ("yes" if row["ratio"] <= row["target"] else "NO") if bounded else "",
            row["vs"] or "",
        ]
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argument_parser(__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=7, help="timed rounds (each Brain steps once per round)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds discarded before timing")
    parser.add_argument(
        "--attack-steps", type=int, default=3, help="steps of the PGD-k, KL-PGD-k and waveform training attacks"
    )
    args = parse_arguments(parser, argv)
    print(
        f"device={args.device} precision={args.precision} base_channels={args.base_channels} "
        f"batch={args.batch_size} frames={args.n_frames} threads={args.threads} "
        f"clock={args.clock} malloc={args.malloc} "
        f"rounds={args.steps} (+{args.warmup} discarded) attack_steps={args.attack_steps}"
    )
    rows = []
    with output_folder() as folder:
        for model in args.models:
            rows += measure_model(args, model, folder)
    print_table(rows)
    print("Targets (issue 3): " + ", ".join(f"{path} <= {target}x" for path, (_, target) in PATH_BOUNDS.items()))
    print(
        f"Targets (issue 9): PGD-k, fast and TRADES steps <= {STRONGER_TARGET}x their floor "
        "(on the GPU; stated on the CPU); waveform and rooms steps: stated against their floor, "
        "and against the step they add the waveform attack, the rooms or the noise to (vs)"
    )
    return rows


if __name__ == "__main__":
    main()
