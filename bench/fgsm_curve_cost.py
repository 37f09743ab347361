#!/usr/bin/env python3
"""FGSM curve cost: one shared input gradient for every eps against one gradient per eps, side by side.

FGSM's direction ``sign(grad_x L)`` does not depend on eps, so ``FGSM.curve``
computes one input gradient per batch and takes every step of the eps grid
from it. The naive way evaluates each eps separately (``FGSM.perturb`` per
eps, i.e. ``GradientAttack.curve``), paying the gradient pass once per eps.

Both go through ``EmotionBrain.evaluate_under_attack`` of a Brain built from
``hparams/<model>_single.yaml`` (its attack and ``eval_eps`` grid, width
reduced by default on CPU) on the same synthetic batches at the paper's input
size (64 mels x 373 frames), taking turns (round-robin) after discarded
warm-up rounds. The script then checks that both give the same predictions
(confusion matrices, hence UAR) at every eps, and the same adversarial
inputs on the first batch.

Run from the repository root (about 45 s of CPU time on 1 thread, under 2 minutes):
    PYTHONPATH=. python bench/fgsm_curve_cost.py
On a GPU, at the paper's width:
    PYTHONPATH=. python bench/fgsm_curve_cost.py --device cuda
"""

import statistics

import torch
from common import (
    argument_parser,
    first_batch,
    make_brain,
    output_folder,
    parse_arguments,
    round_robin,
    synthetic_dataset,
)

from ser_adv_brain.attacks import FGSM
from ser_adv_brain.attacks.base import GradientAttack


class PerEpsilonFGSM(FGSM):
    """FGSM evaluated the naive way: a fresh input gradient for every eps of a curve."""

    curve = GradientAttack.curve


def naive_twin(attack):
    """The same FGSM (budget, labels, mode), with a per-eps curve."""
    return PerEpsilonFGSM(attack.eps, attack.eta, attack.label_source, attack.model_mode)


def same_adversarial_inputs(brain, shared, naive, batch, eps_grid):
    """Largest absolute difference between the two curves' adversarial inputs on one batch."""
    targets = brain.targets(batch)
    with torch.no_grad():
        feats = brain.compute_features(batch.sig.data)
    pairs = zip(
        shared.curve(brain.model, feats, targets, eps_grid),
        naive.curve(brain.model, feats, targets, eps_grid),
    )
    return max(float((a - b).abs().max()) for (_, a), (_, b) in pairs)


def measure_model(args, model, folder):
    """Times both curves through ``evaluate_under_attack`` and compares their results.

    Returns
    -------
    dict
        Median times, speed-up, and the agreement checks.
    """
    brain, hparams = make_brain(args, f"{model}_single", {}, folder)
    dataset = synthetic_dataset(hparams, args.n_utterances, args.seed)
    brain.fit_normalizer(dataset, {"batch_size": args.batch_size})
    # A few clean steps, so that predictions are not all one class.
    batch = first_batch(dataset, args.batch_size, args.device)
    for _ in range(args.train_steps):
        brain.fit_batch(batch)
    eps_grid = hparams["eval_eps"]
    shared = hparams["attack"]
    curves = {"shared": shared, "per-eps": naive_twin(shared)}
    results = {}

    def evaluate(name):
        results[name] = brain.evaluate_under_attack(
            dataset, curves[name], eps_grid, loader_kwargs={"batch_size": args.batch_size}
        )

    times = round_robin(
        {name: (lambda name=name: evaluate(name)) for name in curves},
        args.repeats,
        args.warmup,
        args.device,
        args.clock,
    )
    same_counts = all(torch.equal(results["shared"][eps].counts, results["per-eps"][eps].counts) for eps in eps_grid)
    return {
        "model": model,
        "attack": repr(shared),
        "eps_grid": eps_grid,
        "batches": -(-args.n_utterances // args.batch_size),
        "shared_ms": 1000 * statistics.median(times["shared"]),
        "per_eps_ms": 1000 * statistics.median(times["per-eps"]),
        "speedup": statistics.median(n / s for n, s in zip(times["per-eps"], times["shared"])),
        "same_predictions": same_counts,
        "classes_predicted": int((results["shared"][eps_grid[0]].counts.sum(dim=0) > 0).sum()),
        "uar": {eps: (results["shared"][eps].uar(), results["per-eps"][eps].uar()) for eps in eps_grid},
        "max_input_diff": same_adversarial_inputs(brain, shared, curves["per-eps"], batch, eps_grid),
    }


def print_report(rows):
    print(
        "| model | batches | shared curve ms | per-eps ms | speed-up | same predictions "
        "| classes predicted | max fake-input diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['batches']} | {row['shared_ms']:.1f} | {row['per_eps_ms']:.1f} "
            f"| {row['speedup']:.2f}x | {'yes' if row['same_predictions'] else 'NO'} "
            f"| {row['classes_predicted']} | {row['max_input_diff']:.1e} |"
        )
    for row in rows:
        print(f"\n{row['model']}: {row['attack']}, UAR (shared / per-eps) by eps:")
        for eps, (shared, naive) in row["uar"].items():
            print(f"  eps={eps:.2f}: {shared:.4f} / {naive:.4f}")


def main(argv=None):
    parser = argument_parser(__doc__.split("\n")[0])
    parser.add_argument("--n-utterances", type=int, default=32, help="synthetic utterances (batches of --batch-size)")
    parser.add_argument(
        "--train-steps", type=int, default=25, help="clean steps before evaluating (so that predictions vary)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each curve runs once per round)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds discarded before timing")
    args = parse_arguments(parser, argv)
    print(
        f"device={args.device} precision={args.precision} base_channels={args.base_channels} "
        f"batch={args.batch_size} frames={args.n_frames} utterances={args.n_utterances} threads={args.threads} "
        f"clock={args.clock} malloc={args.malloc} rounds={args.repeats} (+{args.warmup} discarded)"
    )
    with output_folder() as folder:
        rows = [measure_model(args, model, folder) for model in args.models]
    print_report(rows)
    return rows


if __name__ == "__main__":
    main()
