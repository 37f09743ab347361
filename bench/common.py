"""What the benchmarks share: Brains built from the recipe's yaml files, a fixed synthetic batch, timing.

Benchmarks go through the code users run: ``recipe.build_brain`` on an
hparams file loaded with command-line-style overrides, and the Brain's own
methods (``fit_normalizer``, ``fit_batch``, ``evaluate_under_attack``). Only the
data are synthetic: noisy tones of the paper's length, so that timings do
not depend on disk or on a corpus being present.
"""

import argparse
import ctypes
import ctypes.util
import math
import os
import tempfile
import time

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset

from ser_adv_brain.audio.loading import frames_to_samples
from ser_adv_brain.training.brain import EmotionBrain, build_brain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ("fp32", "bf16", "fp16")
# Default model widths: reduced on CPU so that a benchmark takes minutes; the paper's on GPU.
CPU_BASE_CHANNELS = 8
GPU_BASE_CHANNELS = 64
TONE_BASE_HZ = 150.0  # pitch of class 0's tone in the synthetic data
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def add_common_arguments(parser):
    """Options every benchmark takes: where and how to run, what model width and input size."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="SpeechBrain training/eval precision")
    parser.add_argument(
        "--models", default="cnn4,vgg16", help="comma-separated hparams prefixes (cnn4, vgg16, resnet50)"
    )
    parser.add_argument(
        "--base-channels",
        type=int,
        default=None,
        help=f"model width (default {CPU_BASE_CHANNELS} on CPU, {GPU_BASE_CHANNELS} on GPU, the paper's)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="the paper's batch size")
    parser.add_argument("--n-frames", type=int, default=373, help="input frames (373 x 64 mels is the paper's input)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (keep it low on a shared machine)")
    parser.add_argument(
        "--malloc",
        choices=["retain", "system"],
        default="retain",
        help="retain: glibc's malloc keeps freed memory (no page faults from re-mapping activation "
        "buffers every step); system: glibc's defaults",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default=None,
        help="wall: elapsed time; process: this process's CPU time, immune to other processes "
        "on shared cores (default: process on CPU with 1 thread, else wall)",
    )
    parser.add_argument("--hparams-dir", default=os.path.join(REPO, "hparams"))
    parser.add_argument("--seed", type=int, default=1234)
    return parser


def parse_arguments(parser, argv=None):
    """Parses the command line and fills the device-dependent defaults; sets threads and allocator."""
    args = parser.parse_args(argv)
    if args.base_channels is None:
        args.base_channels = GPU_BASE_CHANNELS if args.device.startswith("cuda") else CPU_BASE_CHANNELS
    if args.clock is None:
        args.clock = "process" if args.device == "cpu" and args.threads == 1 else "wall"
    if args.clock == "process" and args.device != "cpu":
        parser.error(f"--clock=process measures CPU work only; use --clock=wall on --device={args.device}")
    if args.malloc == "retain" and not retain_freed_memory():
        print("--malloc=retain: not glibc, the system allocator is used")
        args.malloc = "system"
    torch.set_num_threads(args.threads)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    return args


def retain_freed_memory():
    """Makes glibc's malloc keep the memory it frees, as PyTorch's CUDA caching allocator does.

    By default glibc unmaps large freed blocks (or trims its heap), so the
    next step faults the activation buffers in again, page by page. How often
    that happens depends on what was allocated before, including by the other
    Brains of a round-robin: a cost of the allocator, not of the step.

    Returns
    -------
    bool
        Whether glibc accepted the settings.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    int_max = 2**31 - 1
    # No mmap-ed blocks (they are unmapped on free), and no heap trimming below 2 GiB free.
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, int_max))


def load_hparams(hparams_file, overrides):
    """Loads an hparams yaml as the recipe does, with ``overrides`` as on its command line."""
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


class TrainingStepBrain(EmotionBrain):
    """The recipes' training stage: the yaml's training step, run as their ``compute_forward`` and
    ``compute_objectives`` run it. (Benchmarks time training steps and evaluations only, and import no recipe.)"""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        if hasattr(self.hparams, "wav_augment"):  # as the recipes: in place, so the loss reads the augmented batch
            self.augment_batch(batch, self.hparams.wav_augment)
        return self.training_step.forward(self, batch)

    def compute_objectives(self, predictions, batch, stage):
        return self.training_loss(predictions, batch)


def make_brain(args, experiment, overrides, output_folder, hparams_dir=None):
    """A Brain built by ``recipe.build_brain`` from ``<hparams_dir>/<experiment>.yaml``, ready to train.

    ``args`` gives the device, precision, width, input length, seed and the
    default ``hparams_dir`` (``--hparams-dir``); ``overrides`` adds
    experiment-specific yaml keys. The optimiser is set up as ``fit`` would
    (``on_fit_start``), and the modules are in train mode.
    """
    hparams = load_hparams(
        os.path.join(hparams_dir or args.hparams_dir, f"{experiment}.yaml"),
        {
            "seed": args.seed,
            "base_channels": args.base_channels,
            "n_frames": args.n_frames,
            "batch_size": args.batch_size,
            "output_folder": os.path.join(output_folder, experiment),
            **overrides,
        },
    )
    run_opts = {"device": args.device, "precision": args.precision, "eval_precision": args.precision}
    brain = build_brain(hparams, run_opts, TrainingStepBrain)
    brain.on_fit_start()
    brain.modules.train()
    return brain, hparams


def synthetic_dataset(hparams, n_utterances, seed):
    """A ``DynamicItemDataset`` of noisy tones giving exactly ``n_frames`` frames, the tone's pitch set by the label.

    Labels cycle through the classes, and each class has its own pitch
    (``TONE_BASE_HZ`` a half-octave apart), so that a few training steps give
    varied predictions. The keys are a recipe's (``id``, ``sig``,
    ``emo_encoded``), so SpeechBrain's ``PaddedBatch`` collation builds the
    same batch objects as in training.
    """
    generator = torch.Generator().manual_seed(seed)
    num_samples = frames_to_samples(hparams["n_frames"], hparams["hop_length"])
    time_s = torch.arange(num_samples) / hparams["sample_rate"]
    data = {}
    for index in range(n_utterances):
        label = index % hparams["n_classes"]
        tone = torch.sin(2 * math.pi * TONE_BASE_HZ * 2 ** (label / 2) * time_s)
        data[f"utt{index}"] = {
            "sig": 0.3 * tone + 0.1 * torch.randn(num_samples, generator=generator),
            "emo_encoded": torch.tensor([label]),
        }
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id", "sig", "emo_encoded"])
    return dataset


def first_batch(dataset, batch_size, device):
    """The first ``PaddedBatch`` of the dataset, already on ``device`` (so no copy is timed)."""
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size)
    return next(iter(loader)).to(device)


def timed(fn, device, clock="wall"):
    """Seconds of ``fn()`` on ``clock``, with CUDA work finished on both ends.

    ``"process"`` counts the CPU time of this process only, so that other
    processes sharing the cores do not inflate it (CPU runs only).
    """
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    now = CLOCKS[clock]
    synchronize()
    start = now()
    fn()
    synchronize()
    return now() - start


def round_robin(workloads, repeats, warmup, device, clock="wall"):
    """Times each workload ``warmup + repeats`` times, interleaved; returns name -> kept times.

    Interleaving spreads any drift of the machine's speed (other processes,
    clocks) over every workload instead of biasing one.
    """
    times = {name: [] for name in workloads}
    for round_index in range(warmup + repeats):
        for name, fn in workloads.items():
            elapsed = timed(fn, device, clock)
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def output_folder():
    """A temporary folder for the yaml's output paths (logs, checkpoints stay empty)."""
    return tempfile.TemporaryDirectory(prefix="ser_adv_bench_")


def argument_parser(description):
    """An ``ArgumentParser`` with the common options, showing defaults in ``--help``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_common_arguments(parser)
