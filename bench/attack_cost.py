#!/usr/bin/env python3
"""Cost of the iterative attacks against the gradient passes they are made of, measured side by side.

For each model, the modules of ``hparams/<model>_single.yaml`` (width reduced
by default on CPU) are fitted to one synthetic batch at the paper's input
size (64 mels x 373 frames, batch 16) and put in eval mode, as an evaluation
uses them. Then, taking turns (round-robin) after discarded warm-up rounds:

- ``fgsm_gradients``: k FGSM input gradients (``FGSM.input_gradient``, k times);
- ``pgd``: PGD with k steps and a random start on the features;
- ``apgd_k``, ``apgd_2k``: APGD-CE with k and 2k steps (every step taken) on the
  same features, and ``pgd_k``, ``pgd_2k`` likewise: all four on the model's own
  predictions, so that every utterance starts correct and each attack works on all
  of them (on the true labels APGD skips those the model already gets wrong, PGD
  does not). One iteration costs ``(T(2k) - T(k)) / k``: the difference leaves out
  what each attack does once (APGD also scores its starting point and its last
  iterate, two more forward passes than PGD's k gradients);
- ``waveform_pgd``: waveform PGD with k steps under an SNR budget, its
  gradient through the log-Mel and the normaliser, rounding to 16-bit PCM
  and the realised SNR included.

Each ratio is the median over rounds of one workload's time divided by the
other's in the same round. Targets (issue 8):

- PGD-k against k FGSM input gradients: <= 1.05x (PGD adds only elementwise
  work to each gradient pass);
- an APGD iteration against a PGD iteration: <= 1.05x (APGD's momentum,
  step-size schedule and best-point bookkeeping are elementwise work too);
- a waveform-domain step against a feature-domain step (waveform PGD-k
  against PGD-k): <= 1.3x (the STFT and Mel filters, forward and backward,
  are small beside the model).

With ``--trained FOLDER`` (a training output folder), it also measures the
early exit's saving in a robust-UAR evaluation of that trained model: the
suite of its yaml (``attack_suite`` at ``suite_budgets``), or with ``--tier``
a tier's at ``--budgets`` (default: the tier's; the benchmark's cost per
model: ``--tier=standard``), on its test split, with and without early exit, taking turns; it prints both times, the
utterance-attacks each ran, and whether robust UAR came out the same.

Run from the repository root (about a minute of CPU time on 1 thread):
    PYTHONPATH=. python bench/attack_cost.py
    PYTHONPATH=. python bench/attack_cost.py --trained results/EmoDB/cnn4_vanilla/final
    PYTHONPATH=. python bench/attack_cost.py --trained results/EmoDB_benchmark/cnn4_single/fold0-seed1234 \\
        --tier=standard --utterances=24
On a GPU, at the paper's width:
    PYTHONPATH=. python bench/attack_cost.py --device cuda --precision bf16
"""

import statistics

import torch
import yaml
from common import (
    argument_parser,
    first_batch,
    make_brain,
    output_folder,
    parse_arguments,
    round_robin,
    synthetic_dataset,
)

from ser_adv_brain.attacks import APGD, FGSM, PGD, WaveformPGD
from ser_adv_brain.evaluation.suite import evaluate_suite, suite_entries, suite_plan
from ser_adv_brain.evaluation.tiers import TIERS, tier_attacks, tier_budgets
from ser_adv_brain.models import WaveformClassifier
from ser_adv_brain.runs import load_trained
from ser_adv_brain.training.checkpoints import selection_key

# (ratio name, workload, baseline workload, target)
RATIOS = [
    ("PGD-k / k FGSM gradients", "pgd", "fgsm_gradients", 1.05),
    ("APGD iteration / PGD iteration", ("apgd_2k", "apgd_k"), ("pgd_2k", "pgd_k"), 1.05),
    ("waveform step / feature step", "waveform_pgd", "pgd", 1.3),
]


def attack_workloads(brain, batch, args):
    """Name -> a function running one workload on the batch, in the Brain's evaluation precision."""
    model = brain.model
    wavs, targets = batch.sig.data, brain.targets(batch)
    with torch.no_grad():
        feats = brain.compute_features(wavs)
    classifier = WaveformClassifier(brain.modules.compute_features, brain.modules.normalizer, model)
    k = args.attack_steps
    fgsm = FGSM(eps=args.eps, eta=None, label_source="target")
    pgd = PGD(eps=args.eps, steps=k, eta=None, label_source="target")
    per_iteration = {
        f"{name}_{size}": kind(eps=args.eps, steps=steps, eta=None, label_source="predicted")
        for name, kind in (("pgd", PGD), ("apgd", APGD))
        for size, steps in (("k", k), ("2k", 2 * k))
    }
    waveform_pgd = WaveformPGD(eps=args.snr, steps=k, label_source="target")

    def in_precision(fn):
        def run():
            with brain.evaluation_ctx:
                fn()

        return run

    return {
        "fgsm_gradients": in_precision(lambda: [fgsm.input_gradient(model, feats, targets) for _ in range(k)]),
        "pgd": in_precision(lambda: pgd.perturb(model, feats, targets)),
        **{
            name: in_precision(lambda attack=attack: attack.perturb(model, feats, None))
            for name, attack in per_iteration.items()
        },
        "waveform_pgd": in_precision(lambda: waveform_pgd.perturb(classifier, wavs, targets)),
    }


def cost(times, workload, round_index):
    """A workload's time in one round, or the difference of two workloads' (``(longer, shorter)``)."""
    if isinstance(workload, tuple):
        longer, shorter = workload
        return times[longer][round_index] - times[shorter][round_index]
    return times[workload][round_index]


def measure_model(args, model_name, folder):
    """Times the workloads of one model round-robin; returns a row per workload and per ratio."""
    brain, hparams = make_brain(args, f"{model_name}_single", {}, folder)
    dataset = synthetic_dataset(hparams, args.batch_size, args.seed)
    batch = first_batch(dataset, args.batch_size, args.device)
    brain.fit_normalizer(dataset, {"batch_size": args.batch_size})
    brain.modules.eval()
    times = round_robin(attack_workloads(brain, batch, args), args.rounds, args.warmup, args.device, args.clock)
    rows = [{"model": model_name, "measure": name, "ms": 1000 * statistics.median(t)} for name, t in times.items()]
    for label, workload, baseline, target in RATIOS:
        ratio = statistics.median(cost(times, workload, r) / cost(times, baseline, r) for r in range(args.rounds))
        rows.append({"model": model_name, "measure": label, "ratio": ratio, "target": target})
    return rows


def measure_early_exit(args):
    """Robust-UAR evaluation of a trained model's test split with and without early exit, round-robin."""
    hparams, datasets, brain = load_trained(args.trained, [f"--device={args.device}", "--noprogressbar"])
    attacks = (
        tier_attacks(args.tier, output_folder=args.trained, sample_rate=hparams["sample_rate"])
        if args.tier
        else hparams["attack_suite"]
    )
    budgets = args.budgets or (tier_budgets(args.tier) if args.tier else None)
    budgets = yaml.safe_load(budgets) if budgets else hparams["suite_budgets"]
    for attack in attacks:
        attack.set_class_names(hparams["label_encoder"])
    plan = suite_plan(suite_entries(attacks), budgets)
    # Without the early exit a standard-tier evaluation of a whole split takes hours on a CPU: a part estimates it.
    test = datasets["test"].filtered_sorted(select_n=args.utterances) if args.utterances else datasets["test"]
    outcomes = {}

    def evaluate(early_exit):
        loader_kwargs = hparams["test_dataloader_options"]
        outcomes[early_exit] = evaluate_suite(
            brain, test, plan, early_exit, loader_kwargs, selection_key(hparams["select_checkpoint"])
        )

    times = round_robin(
        {"early exit": lambda: evaluate(True), "no early exit": lambda: evaluate(False)},
        args.exit_rounds,
        0,
        args.device,
        args.clock,
    )
    on, off = outcomes[True], outcomes[False]
    robust = {(g, b): (on.uar(on.robust_after(g, b)), off.uar(off.robust_after(g, b))) for g, b, _ in plan}
    return {
        "folder": args.trained,
        "suite": f"the {args.tier} tier" if args.tier else "its yaml's suite",
        "utterances": len(on.ids),
        "seconds": {name: statistics.median(t) for name, t in times.items()},
        "attacked": (on.attacked_count, off.attacked_count),
        "robust": robust,
        "same_per_utterance": all(torch.equal(on.robust_after(g, b), off.robust_after(g, b)) for g, b, _ in plan),
    }


def print_early_exit(row):
    on, off = row["seconds"]["early exit"], row["seconds"]["no early exit"]
    print(
        f"\nEarly exit, robust-UAR evaluation of {row['folder']} "
        f"(test, {row['utterances']} utterances, {row['suite']}):"
    )
    print("| | seconds | utterance-attacks | robust UAR per budget |")
    print("|---|---|---|---|")
    for index, name in enumerate(("early exit", "no early exit")):
        cells = ", ".join(f"{g} {b:g}: {uars[index]:.3f}" for (g, b), uars in row["robust"].items())
        print(f"| {name} | {row['seconds'][name]:.1f} | {row['attacked'][index]} | {cells} |")
    print(
        f"saving: {off / on:.2f}x the time, {row['attacked'][1] / row['attacked'][0]:.2f}x the utterance-attacks; "
        f"robust outcome identical per utterance: {'yes' if row['same_per_utterance'] else 'no'}"
    )


def print_table(rows):
    """A markdown table: times of the workloads, then the ratios against their targets."""
    print("| model | measure | ms | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "ratio" in row:
            met = "yes" if row["ratio"] <= row["target"] else "NO"
            print(f"| {row['model']} | {row['measure']} | | {row['ratio']:.3f} | {row['target']:.2f} | {met} |")
        else:
            print(f"| {row['model']} | {row['measure']} | {row['ms']:.1f} | | | |")


def main(argv=None):
    parser = argument_parser(__doc__.split("\n")[0])
    parser.set_defaults(models="cnn4")
    parser.add_argument("--attack-steps", type=int, default=10, help="k: PGD steps, and FGSM gradients to compare with")
    parser.add_argument("--eps", type=float, default=0.1, help="feature-domain Linf budget")
    parser.add_argument("--snr", type=float, default=30.0, help="waveform budget, SNR in dB")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each workload runs once per round)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds discarded before timing")
    parser.add_argument(
        "--trained", default=None, help="a training output folder: also measure the early exit's saving"
    )
    parser.add_argument("--exit-rounds", type=int, default=1, help="timed rounds of each robust-UAR evaluation")
    parser.add_argument(
        "--utterances", type=int, default=None, help="with --trained: the first N test utterances only (default: all)"
    )
    parser.add_argument("--tier", choices=TIERS, default=None, help="with --trained: a tier's suite, not the yaml's")
    parser.add_argument(
        "--budgets", default=None, help="with --trained: suite budgets as yaml (default: the tier's, else the yaml's)"
    )
    args = parse_arguments(parser, argv)
    print(
        f"device={args.device} precision={args.precision} base_channels={args.base_channels} "
        f"batch={args.batch_size} frames={args.n_frames} threads={args.threads} "
        f"clock={args.clock} malloc={args.malloc} "
        f"k={args.attack_steps} rounds={args.rounds} (+{args.warmup} discarded)"
    )
    rows = []
    with output_folder() as folder:
        for model_name in args.models:
            rows += measure_model(args, model_name, folder)
    print_table(rows)
    if args.trained:
        print_early_exit(measure_early_exit(args))
    return rows


if __name__ == "__main__":
    main()
