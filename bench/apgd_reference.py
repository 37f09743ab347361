"""The project's APGD against an independent implementation, on the same trained model and the same inputs.

The reference is torchattacks' ``APGD`` and ``APGDT`` (Kim, 2020: its port of Croce and Hein's
auto-attack code, the AutoAttack paper's own implementation). It is a reference oracle for this
check only, not a dependency of the package: ``pip install torchattacks`` first.

    python bench/apgd_reference.py results/EmoDB_benchmark/cnn4_single/fold0-seed1234 \\
        results/EmoDB_benchmark/cnn4_trades/fold0-seed1234

For each run, on its test split, from the same clean inputs and the true labels: robust UAR and
accuracy under APGD-CE, APGD-DLR and APGD-T (every other class as target), ours and theirs, 100
iterations, one restart, in three threat models: Linf and L2 on the z-scored log-Mel features, and
an SNR budget on the waveform (each utterance's L2 ball of radius ``|x|_2 / 10^(SNR / 20)``, which
torchattacks takes one utterance at a time). Each line also counts the utterances only one of
the two fools.

torchattacks clips its iterates to [0, 1]: the features are mapped onto [0, 1] through a box wide
enough that the clip never binds (the budget, rescaled by the same factor, is the same ball); the
waveform is mapped through the 16-bit PCM range, so the clip is the PCM range our attack also ends
in. Our waveform attack rounds its perturbation onto the 16-bit grid (the threat model:
``attacks/waveform_budget.py``); theirs is scored both as returned and rounded the same way.
"""

import argparse
import logging

import torch
import torchattacks

from ser_adv_brain.attacks import APGD, WaveformAPGD
from ser_adv_brain.audio.pcm import PCM16_SCALE, quantize_pcm16
from ser_adv_brain.metrics import uar_of_correct
from ser_adv_brain.runs.reload import TrainedModel
from ser_adv_brain.tables import markdown_table

PCM_TOP = (PCM16_SCALE - 1) / PCM16_SCALE


class UnitBox(torch.nn.Module):
    """``u`` in [0, 1], laid out as images ``[N, 1, 1, D]`` -> the logits of ``model`` at ``low + scale * u``
    in its own input shape: torchattacks' input range and layout (norms are unchanged by the layout)."""

    def __init__(self, model, low, scale, shape):
        super().__init__()
        self.model, self.low, self.scale, self.shape = model, low, scale, shape

    def forward(self, unit):
        return self.model((self.low + self.scale * unit).view(len(unit), *self.shape))[0]


def theirs(kind, model, inputs, labels, eps, norm, n_classes, steps):
    """torchattacks' APGD-``kind`` on ``inputs`` (one batch) mapped into [0, 1]; the adversarial inputs."""
    if norm == "snr":  # the clip is the PCM range; the radius is each utterance's own: one at a time
        low, scale = -1.0, 1.0 + PCM_TOP
        radii = inputs.flatten(1).norm(dim=1) / 10 ** (eps / 20)
        return torch.cat(
            [
                theirs_one(kind, model, low, scale, x[None], y[None], r / scale, "L2", n_classes, steps)
                for x, y, r in zip(inputs, labels, radii)
            ]
        )
    margin = eps + 1.0  # a coordinate moves by at most eps in either norm
    low, high = inputs.min().item() - margin, inputs.max().item() + margin
    norm_name = {"linf": "Linf", "l2": "L2"}[norm]
    return theirs_one(kind, model, low, high - low, inputs, labels, eps / (high - low), norm_name, n_classes, steps)


def theirs_one(kind, model, low, scale, inputs, labels, eps, norm, n_classes, steps):
    """torchattacks' APGD-``kind`` on ``inputs`` through ``UnitBox``; the adversarial inputs in their own scale."""
    unit_model, unit = UnitBox(model, low, scale, inputs.shape[1:]), ((inputs - low) / scale).flatten(1)[:, None, None]
    if kind == "T":
        attack = torchattacks.APGDT(
            unit_model, norm=norm, eps=float(eps), steps=steps, n_restarts=1, n_classes=n_classes
        )
    else:
        attack = torchattacks.APGD(unit_model, norm=norm, eps=float(eps), steps=steps, n_restarts=1, loss=kind.lower())
    return attack(unit, labels).view(inputs.shape) * scale + low


def ours(kind, model, inputs, labels, eps, norm, steps, seed):
    """The project's APGD-``kind`` as the standard tier runs it (every step taken here, as torchattacks')."""
    options = {
        "loss": "ce" if kind == "CE" else "dlr",
        "targets": 9 if kind == "T" else 0,
        "steps": steps,
        "seed": seed,
    }
    if norm == "snr":
        return WaveformAPGD(eps=eps, label_source="target", **options).perturb(model, inputs, labels)
    return APGD(eps=eps, norm=norm, eta=None, label_source="target", **options).perturb(model, inputs, labels)


def pcm_rounded(clean, adversarial):
    """``adversarial`` as our waveform attack scores its own: the perturbation truncated onto the 16-bit grid."""
    delta = torch.trunc((adversarial - clean) * PCM16_SCALE) / PCM16_SCALE
    return (clean + delta).clamp(-1.0, PCM_TOP)


def compare(folder, threat_models, steps, kinds, seed):
    run = TrainedModel(folder)
    n_classes = run.hparams["n_classes"]
    wavs, labels = [], []
    for _, batch_wavs, targets in run.batches("test"):
        wavs.append(batch_wavs)
        labels.append(targets)
    wavs, labels = quantize_pcm16(torch.cat(wavs)), torch.cat(labels)
    with torch.no_grad():
        feats = run.brain.compute_features(wavs)
        clean_correct = run.model(feats)[0].argmax(-1) == labels
    rows = []
    for norm, eps in threat_models:
        model, inputs = (run.waveform_model, wavs) if norm == "snr" else (run.model, feats)
        for kind in kinds:
            torch.manual_seed(seed)  # torchattacks' random start; ours draws from its own generator, seeded alike
            scored = {"ours": ours(kind, model, inputs, labels, eps, norm, steps, seed)}
            reference = theirs(kind, model, inputs, labels, eps, norm, n_classes, steps)
            if norm == "snr":
                scored["torchattacks, as returned"] = reference
                scored["torchattacks, rounded to 16 bits"] = pcm_rounded(inputs, reference)
            else:
                scored["torchattacks"] = reference
            correct = {}
            for who, adversarial in scored.items():
                with torch.no_grad():
                    correct[who] = clean_correct & (model(adversarial)[0].argmax(-1) == labels)
            for who, still in correct.items():
                row = [
                    folder,
                    f"{norm} {eps:g}" + (" dB" if norm == "snr" else ""),
                    f"APGD-{kind}",
                    who,
                    f"{uar_of_correct(still, labels, n_classes):.3f}",
                    f"{still.float().mean():.3f}",
                    "" if who == "ours" else int((correct["ours"] & ~still).sum()),
                    "" if who == "ours" else int((~correct["ours"] & still).sum()),
                ]
                logging.info(" | ".join(map(str, row)))  # each row as it is measured: a long run killed keeps them
                rows.append(row)
    return rows, int(clean_correct.sum()), len(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="trained output folders")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--linf", type=float, default=0.02, help="features Linf budget")
    parser.add_argument("--l2", type=float, default=1.0, help="features L2 budget")
    parser.add_argument("--snr", type=float, default=40.0, help="waveform SNR budget, dB")
    parser.add_argument(
        "--threat_models",
        nargs="+",
        choices=["linf", "l2", "snr"],
        default=["linf", "l2", "snr"],
        help="which to compare (the waveform one attacks with torchattacks one utterance at a time: the slowest)",
    )
    parser.add_argument("--kinds", nargs="+", choices=["CE", "DLR", "T"], default=["CE", "DLR", "T"])
    parser.add_argument("--seed", type=int, default=0, help="both implementations' random starts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budgets = {"linf": args.linf, "l2": args.l2, "snr": args.snr}
    threat_models = [(norm, budgets[norm]) for norm in args.threat_models]
    header = ["run", "budget", "attack", "implementation", "robust UAR", "robust accuracy"]
    header += ["fooled by it only", "fooled by ours only"]
    rows = []
    for folder in args.runs:
        run_rows, n_correct, n = compare(folder, threat_models, args.steps, args.kinds, args.seed)
        print(f"{folder}: {n} test utterances, {n_correct} correct on clean audio")
        rows += run_rows
    print(markdown_table(rows, header))


if __name__ == "__main__":
    main()
