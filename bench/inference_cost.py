#!/usr/bin/env python3
"""Cost of a forward pass without gradient, the models' max pooling (``MaxPool2d``) against torch's, side by side.

The Square Attack's 5,000 queries, smoothing's votes (n0 + n per utterance) and every prediction are forward
passes without a gradient; on a CPU the standard tier's time is mostly the Square Attack's. There torch's max
pooling in the default (channels-first) memory order is slow, so the models pool in channels-last order when no
gradient is taken (``ser_adv_brain.models.common.MaxPool2d``), which changes no output: a maximum is exact.

For each model, built at the bench's width and put in eval mode, and one random batch of features, it checks that
logits are bit for bit equal with either pooling, then times (round-robin, after discarded warm-up rounds):

- ``forward``: the model's forward pass under ``torch.no_grad()``, with its pooling and with torch's;
- ``input gradient``: a forward and an input-gradient backward, both ways (the same code path: about 1.0x).

The ratio is the median over rounds of the models' pooling's time divided by torch's in the same round.

Run from the repository root (under a minute of CPU time on 1 thread), at EmoDB's input size on a CPU:
    PYTHONPATH=. python bench/inference_cost.py --n-frames 188
"""

import statistics

import torch
from common import argument_parser, parse_arguments, round_robin

from ser_adv_brain.models import CNN4, VGG16, ResNet50
from ser_adv_brain.models.common import with_torch_pooling

MODELS = {"cnn4": CNN4, "vgg16": VGG16, "resnet50": ResNet50}
N_MELS = 64


def forward(model, feats):
    def run():
        with torch.no_grad():
            model(feats)

    return run


def input_gradient(model, feats):
    def run():
        leaf = feats.clone().requires_grad_()
        torch.autograd.grad(model(leaf)[0].sum(), leaf)

    return run


def main():
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (each workload runs once per round)")
    parser.add_argument("--warmup", type=int, default=3, help="rounds discarded before timing")
    args = parse_arguments(parser)
    torch.manual_seed(args.seed)
    feats = torch.randn(args.batch_size, args.n_frames, N_MELS, device=args.device)
    print(
        f"device {args.device}, {args.threads} thread(s), {args.clock} clock, width {args.base_channels}, "
        f"batch {args.batch_size} x {args.n_frames} frames x {N_MELS} mels, median of {args.rounds} rounds"
    )
    print("model     | forward: MaxPool2d ms | torch ms | ratio | input gradient: ratio | logits equal")
    for name in args.models:
        model = MODELS[name](n_classes=7, base_channels=args.base_channels).to(args.device).eval()
        reference = with_torch_pooling(model)
        with torch.no_grad():
            equal = torch.equal(model(feats)[0], reference(feats)[0])
        workloads = {
            "forward": forward(model, feats),
            "forward torch": forward(reference, feats),
            "gradient": input_gradient(model, feats),
            "gradient torch": input_gradient(reference, feats),
        }
        times = round_robin(workloads, args.rounds, args.warmup, args.device, args.clock)

        def ratio(workload):
            return statistics.median(a / b for a, b in zip(times[workload], times[f"{workload} torch"]))

        ours, theirs = (1000 * statistics.median(times[w]) for w in ("forward", "forward torch"))
        print(
            f"{name:9} | {ours:21.1f} | {theirs:8.1f} | {ratio('forward'):5.2f} | "
            f"{ratio('gradient'):21.2f} | {'yes' if equal else 'NO'}"
        )


if __name__ == "__main__":
    main()
