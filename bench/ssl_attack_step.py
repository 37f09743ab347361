#!/usr/bin/env python3
"""Cost of one waveform attack step on the self-supervised recipes' models, against their forward pass.

For each family (wav2vec 2.0, HuBERT, WavLM) the model of ``recipes/EmoDB/hparams/<family>_single.yaml``
is built as the recipe builds it, around a randomly initialised encoder saved first
(``ser_adv_brain.models.self_supervised.random_encoder_folder``: no download; the time of a pass does
not depend on the weights' values), and put in eval mode, as the attack suite runs it. Then, taking
turns (round-robin) after discarded warm-up rounds, on one batch of noise at the recipe's rate:

- ``forward``: the model's forward pass without gradients;
- ``attack step``: one step of ``WaveformPGD`` under the SNR budget (``steps=1``, no random start):
  its forward and backward to the waveform, 16-bit rounding and the realised SNR included.

The ratio ``attack step / forward`` is the median over rounds of the two times of one round; the
floor is about 3 (a backward costs about two forwards). A suite's iterative attack costs ``steps``
such steps per utterance still alive.

Run from the repository root:
    PYTHONPATH=. python bench/ssl_attack_step.py                                  # tiny encoders, CPU
    PYTHONPATH=. python bench/ssl_attack_step.py --size base --batch-size 1 --rounds 3
    PYTHONPATH=. python bench/ssl_attack_step.py --size base --device cuda --batch-size 8 --clock wall
"""

import argparse
import statistics
import tempfile

import torch
from common import CLOCKS, round_robin
from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.attacks import WaveformPGD
from ser_adv_brain.models.self_supervised import ENCODER_CLASSES, TINY_ENCODER, random_encoder_folder

SIZES = {"tiny": TINY_ENCODER, "base": {}}  # base: the Hugging Face configurations' defaults, the base models'


def recipe_model(family, encoder_folder, output_folder, device):
    """The recipe's model of ``family`` around the encoder in ``encoder_folder``, in eval mode on ``device``."""
    overrides = {"encoder_source": encoder_folder, "data_folder": "unused", "output_folder": output_folder}
    with open(f"recipes/EmoDB/hparams/{family}_single.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    return hparams["model"].to(device).eval(), hparams["sample_rate"]


def measure(args, family, folder):
    encoder = random_encoder_folder(family, f"{folder}/{family}", **SIZES[args.size])
    model, sample_rate = recipe_model(family, encoder, f"{folder}/run", args.device)
    generator = torch.Generator().manual_seed(args.seed)
    wavs = (0.1 * torch.randn(args.batch_size, int(args.seconds * sample_rate), generator=generator)).to(args.device)
    targets = torch.zeros(args.batch_size, dtype=torch.long, device=args.device)
    step = WaveformPGD(eps=args.snr, steps=1, random_start=False, label_source="target")

    def forward():
        with torch.no_grad():
            model(wavs)

    times = round_robin(
        {"forward": forward, "attack step": lambda: step.run(model, wavs, targets)},
        args.rounds,
        args.warmup,
        args.device,
        args.clock,
    )
    ratio = statistics.median(a / f for a, f in zip(times["attack step"], times["forward"]))
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "family": family,
        "parameters": parameters,
        **{name: 1000 * statistics.median(t) for name, t in times.items()},
        "ratio": ratio,
    }


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (keep it low on a shared machine)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None, help="default: process on 1 CPU thread")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="the encoders' size")
    parser.add_argument("--seconds", type=float, default=3.0, help="audio per utterance (the recipes' 150 frames)")
    parser.add_argument("--snr", type=float, default=40.0, help="the step's budget, dB SNR")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # As bench/common.py: CPU time of this process where one thread runs on shared cores, else elapsed time.
    args.clock = args.clock or ("process" if args.device == "cpu" and args.threads == 1 else "wall")
    torch.set_num_threads(args.threads)
    return args


def main(argv=None):
    args = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="ser_adv_ssl_bench_") as folder:
        rows = [measure(args, family, folder) for family in ENCODER_CLASSES]
    print(
        f"{args.size} encoders, batch {args.batch_size} x {args.seconds:g} s, {args.device}, "
        f"{args.threads} thread(s), {args.clock} clock, median of {args.rounds} rounds:"
    )
    print("| family | parameters | forward ms | attack step ms | step / forward |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['family']} | {row['parameters']:,} | {row['forward']:.1f} | {row['attack step']:.1f} "
            f"| {row['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
