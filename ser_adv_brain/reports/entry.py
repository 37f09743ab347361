"""Benchmark entries: one evaluated model as a JSON file another lab can read, check and rank.

After RobustBench's model records (Croce et al., NeurIPS 2021 Datasets and Benchmarks), adapted to
speech: the corpus and its speaker-fold protocol, the fold and seed, the architecture, the training
(its yaml and training step), the test split's size, the tier of the attack suite and its attacks, the
clean UAR and, per threat model and budget (with its unit), the robust UAR and the forward passes the
attacks cost per utterance; the code version, date and hardware (a CPU's kernels change the floats).
Every test utterance's outcome is in the entry too (its emotion, whether the model got it right, and
whether it stayed right at each budget), so that the UARs, and the intervals the leaderboard and the
benchmark compute, can be checked from the file. An over-the-air threat model adds the two figures that
say what its robust UAR in the held-out rooms means (``suite_report.ROOM_ROWS``): the same audio heard
directly, and real data in the rooms with no attack.

A smoothed classifier's certificates (``ser-adv certify``) make an entry of the ``certified`` tier: robust
UAR there is certified UAR (Cohen et al., ICML 2019), each utterance keeps its certificate (class, lower
bound ``pA``, raw radius, its input's norm), and the adaptive attack's outcome, where it ran, adds robust
UAR under attack beside it: the certified figure is a lower bound on the smoothed classifier's robust UAR,
the attacked one an upper bound.
"""

import datetime
import functools
import json
import os
import subprocess

import torch
from speechbrain.utils.distributed import if_main_process

import ser_adv_brain
from ser_adv_brain.data.manifests import SPLIT_FILE
from ser_adv_brain.evaluation.suite import attack_names

ENTRY_FILE = "entry.json"
BUDGET_UNITS = {
    "features_linf": "eps, Linf on the z-scored log-Mel features",
    "features_l2": "eps, L2 on the z-scored log-Mel features",
    "waveform_linf": "amplitude, Linf on the waveform (full scale 1)",
    "waveform_l2": "L2 on the waveform",
    "waveform_snr": "dB SNR per utterance (L2 on the 16-bit waveform)",
    "waveform_room_snr": "dB SNR per utterance (L2 on the 16-bit waveform), heard in held-out simulated rooms",
    "waveform_universal": "dB below the median training utterance's RMS (one 16-bit perturbation for all)",
}
# What must agree for two entries to stand in one table: the data, how they were split and tested, and how hard
# (a certificate's votes and failure probability, and the attack on the smoothed classifier; absent from the attack
# tiers' entries, whose tier names their attacks).
PROTOCOL_FIELDS = ("corpus", "protocol", "split", "tier", "early_exit", "certificate", "adaptive_attack")
CERTIFIED_TIER = "certified"


def result_key(threat_model, budget):
    """``features_linf@0.02``: a budget's key in an entry's per-utterance outcomes."""
    return f"{threat_model}@{budget:g}"


def heard_directly_key(key):
    """``waveform_room_snr@40 heard directly``: robust at an over-the-air budget's ``result_key``, no room between."""
    return f"{key} heard directly"


def in_rooms_key(threat_model):
    """``waveform_room_snr real data in the rooms``: right on real data in every held-out room of a threat model."""
    return f"{threat_model} real data in the rooms"


def robust_kind(entry):
    """What an entry's robust figure is: ``certified`` in the certified tier, where it is certified UAR, else
    ``robust``."""
    return "certified" if entry["tier"] == CERTIFIED_TIER else "robust"


def under_attack_key(key):
    """``waveform_snr@40 under attack``: a smoothed classifier still right at a budget's ``result_key`` under the
    adaptive attack (a ``certified`` entry's robust figure is the certificate)."""
    return f"{key} under attack"


def figure_keys(entry):
    """The keys of every figure an entry's utterances give beyond real data: robust (or certified) at each budget
    (``result_key``), then, for an over-the-air threat model, heard directly at each budget and real data in
    its rooms, and, for a certified entry with its adaptive attack, under attack at each budget."""
    keys = [result_key(r["threat_model"], r["budget"]) for r in entry["results"]]
    rooms = [r for r in entry["results"] if "robust_UAR_heard_directly" in r]
    keys += [heard_directly_key(result_key(r["threat_model"], r["budget"])) for r in rooms]
    keys += [in_rooms_key(group) for group in dict.fromkeys(r["threat_model"] for r in rooms)]
    attacked = [r for r in entry["results"] if "robust_UAR_under_attack" in r]
    return keys + [under_attack_key(result_key(r["threat_model"], r["budget"])) for r in attacked]


# Where a ``per_utterance`` row keeps the outcomes of ``figure_keys``: robust or certified at each budget, then
# an over-the-air threat model's other two figures, then the adaptive attack's on a smoothed classifier.
OUTCOME_PARTS = ("robust", "over_the_air", "under_attack")


def utterance_outcome(row, key=None):
    """Whether one of an entry's ``per_utterance`` rows was right: on real data (``key`` None), else at one of
    ``figure_keys``."""
    if key is None:
        return row["correct"]
    return next(row[part][key] for part in OUTCOME_PARTS if key in row.get(part, {}))


def read_protocol(output_folder):
    """The corpus and its split protocol, from what the run's data preparation wrote.

    The corpus is named in the first line of ``data_summary.md`` (``# EmoDB: speaker fold 0 of 5``); the
    protocol from ``prepare_options.json``: a speaker fold (with the number of folds), the paper's
    random speaker split (ratio and seed), or a fixed split (its file or speaker lists). A run given
    its own manifests (``skip_prep``) has neither: its protocol is those manifests.
    """
    if not os.path.isfile(os.path.join(output_folder, "prepare_options.json")):
        return "unknown", {"kind": "given manifests"}, None
    with open(os.path.join(output_folder, "data_summary.md"), encoding="utf-8") as f:
        corpus = f.readline().lstrip("# ").split(":")[0].strip()
    with open(os.path.join(output_folder, "prepare_options.json"), encoding="utf-8") as f:
        options = json.load(f)
    if options.get("fold") is not None:
        protocol = {"kind": "speaker folds", "n_folds": options["n_folds"]}
    elif options.get("split_file") or options.get("test_speakers"):
        with open(os.path.join(output_folder, SPLIT_FILE), encoding="utf-8") as f:
            protocol = {"kind": "fixed speaker split", "speakers": f.read()}
    else:
        protocol = {"kind": "random speaker split", "ratio": options["split_ratio"], "seed": options["seed"]}
    return corpus, protocol, options.get("fold")


@functools.cache
def code_version():
    """The git commit of the package's checkout (``-dirty`` with changes), or its version when installed.

    Read once, when this module is loaded (below): a process runs the code it loaded, so an entry written
    hours later, after the checkout moved on, still names the commit that computed it.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(ser_adv_brain.__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return ser_adv_brain.__version__
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


code_version()


def training_yaml(output_folder, experiment_name):
    r"""The name of the yaml file a run was trained from, read from the header of SpeechBrain's copy of it
    (``hyperparams.yaml``: ``# Generated <date> from:``, then ``# <path>``): one yaml file can train several
    experiments (``--experiment_name=hubert_vanilla`` with ``wav2vec2_vanilla.yaml``). ``<experiment_name>.yaml``
    where the copy or its header is missing.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "hyperparams.yaml"), "w") as f:
    ...     _ = f.write("# Generated 2026-12-06 from:\n# /home/me/recipes/EmoDB/hparams/wav2vec2_vanilla.yaml\n")
    >>> training_yaml(folder, "hubert_vanilla"), training_yaml(tempfile.mkdtemp(), "hubert_vanilla")
    ('wav2vec2_vanilla.yaml', 'hubert_vanilla.yaml')
    """
    try:
        with open(os.path.join(output_folder, "hyperparams.yaml"), encoding="utf-8") as f:
            first, second = f.readline(), f.readline()
    except FileNotFoundError:
        first = second = ""
    if first.startswith("# Generated") and second.startswith("#") and second.strip().endswith(".yaml"):
        return os.path.basename(second[1:].strip())
    return f"{experiment_name}.yaml"


# The variables that cap the CPU kernels oneDNN and MKL pick (``ATEN_CPU_CAPABILITY`` shows in ATen's own answer).
KERNEL_LIMITS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def hardware(device):
    """What computed an entry's floats, which another machine's kernels compute otherwise (up to .13 UAR apart,
    ``docs/testing.md``): the GPU's name, or the CPU's ATen kernels and the variables that capped the others.

    Example
    -------
    >>> hardware("cpu")["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return {"device": "cuda", "name": torch.cuda.get_device_name(device)}
    limits = {name: os.environ[name] for name in KERNEL_LIMITS if name in os.environ}
    return {"device": device.type, "cpu_kernels": torch.backends.cpu.get_cpu_capability(), "kernel_limits": limits}


def run_identity(hparams, training_step, name=None):
    """An entry's first fields, the evaluated model's identity: its name (the experiment's by default), corpus,
    fold protocol and fold, seed, architecture and training (its yaml and ``training_step``)."""
    corpus, protocol, fold = read_protocol(hparams["output_folder"])
    return {
        "name": name or hparams["experiment_name"],
        "corpus": corpus,
        "protocol": protocol,
        "fold": fold,
        "seed": hparams["seed"],
        "architecture": {"model": type(hparams["model"]).__name__, "base_channels": hparams.get("base_channels")},
        "training": {
            "yaml": training_yaml(hparams["output_folder"], hparams["experiment_name"]),
            "step": repr(training_step),
        },
    }


def provenance(device):
    """An entry's last fields: the code version, date, torch and the hardware that computed it on ``device``."""
    return {
        "code_version": code_version(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "hardware": hardware(device),
    }


def make_entry(hparams, outcomes, plan, tier, split, early_exit, training_step, device):
    """The entry of a model evaluated on ``split`` (``outcomes``: its gathered ``SplitOutcomes``) on ``device``."""
    budgets = [(step.group, step.budget) for step in plan]
    labels = hparams["label_encoder"].decode_ndim(outcomes.targets.tolist())
    robust = {result_key(g, b): outcomes.robust_after(g, b) for g, b in budgets}
    rooms = [(g, b) for g, b in budgets if g in outcomes.room_clean]
    over_the_air = {heard_directly_key(result_key(g, b)): outcomes.robust_after(g, b, directly=True) for g, b in rooms}
    over_the_air.update({in_rooms_key(g): outcomes.correct_unattacked(g) for g, _ in rooms})
    return {
        **run_identity(hparams, training_step),
        "split": split,
        "utterances": len(outcomes.ids),
        "tier": tier,
        "early_exit": bool(early_exit),
        "attacks": sorted(attack_names(plan)),
        "clean_UAR": outcomes.uar(outcomes.clean_correct),
        "results": [
            {
                "threat_model": g,
                "budget": b,
                "unit": BUDGET_UNITS[g],
                "robust_UAR": outcomes.uar(robust[result_key(g, b)]),
                "forward_passes_per_utterance": outcomes.forward_passes_per_utterance(g, b),
                **(
                    {
                        "robust_UAR_heard_directly": outcomes.uar(over_the_air[heard_directly_key(result_key(g, b))]),
                        "real_UAR_in_rooms": outcomes.uar(over_the_air[in_rooms_key(g)]),
                    }
                    if (g, b) in rooms
                    else {}
                ),
            }
            for g, b in budgets
        ],
        "per_utterance": [
            {
                "id": utterance,
                "emotion": label,
                "correct": bool(outcomes.clean_correct[i]),
                "robust": {key: bool(value[i]) for key, value in robust.items()},
                **({"over_the_air": {key: bool(value[i]) for key, value in over_the_air.items()}} if rooms else {}),
            }
            for i, (utterance, label) in enumerate(zip(outcomes.ids, labels))
        ],
        **provenance(device),
    }


def make_certified_entry(
    hparams,
    certificates,
    smoothing,
    budgets,
    policy,
    training_step,
    device,
    attacked=None,
    plan=(),
    early_exit=True,
    draws=None,
):
    """The ``certified`` entry of a smoothed classifier's test split.

    Arguments
    ---------
    hparams : dict
        The run's.
    certificates : SplitCertificates
        CERTIFY's outcome on the test split.
    smoothing : RandomizedSmoothing
        The smoothed classifier; its sigma names the model (``<experiment>_sigma<sigma>``): one base classifier
        smoothed at two sigmas is two models.
    budgets : list
        ``(threat model, budget)`` pairs of ``certification.CERTIFIED_THREATS`` in the smoothing's domain.
    policy : str
        What is certified, where the noise is added, the gain policy and what the radius means
        (``certification_report.policy_markdown``): a radius means nothing without them.
    training_step : TrainingStep
        The base classifier's.
    device : str or torch.device
    attacked, plan, early_exit, draws :
        The adaptive attack's ``SplitOutcomes`` on the same utterances, its suite plan, its early exit and the
        noisy copies of each of its forward passes (``attack_smoothed``); None: certificates only.
    """
    if attacked is not None and attacked.ids != certificates.ids:
        raise ValueError("The certificates and the adaptive attack's outcomes are of other utterances.")
    labels = hparams["label_encoder"].decode_ndim(list(range(certificates.n_classes)))
    certified = {result_key(g, b): certificates.certified_within(g, b) for g, b in budgets}
    attacked_budgets = {(step.group, step.budget) for step in plan} if attacked is not None else set()
    attacks = sorted(attack_names(plan)) if attacked is not None else []
    under_attack = {
        under_attack_key(result_key(g, b)): attacked.robust_after(g, b)
        for g, b in budgets
        if (g, b) in attacked_budgets
    }
    return {
        **run_identity(hparams, training_step, name=f"{hparams['experiment_name']}_sigma{smoothing.sigma:g}"),
        "split": "test",
        "utterances": len(certificates.ids),
        "tier": CERTIFIED_TIER,
        "early_exit": bool(early_exit),
        "certificate": {"n0": smoothing.n0, "n": smoothing.n, "alpha": smoothing.alpha},
        "smoothing": {
            "domain": smoothing.domain,
            "sigma": smoothing.sigma,
            "seed": smoothing.seed,
            "max_radius": smoothing.max_radius,
            "policy": policy,
        },
        "attacks": attacks,
        "adaptive_attack": {"attacks": attacks, "draws": draws} if attacked is not None else None,
        "abstained": int((certificates.prediction < 0).sum()),
        "clean_UAR": certificates.uar(0.0),
        "results": [
            {
                "threat_model": g,
                "budget": b,
                "unit": BUDGET_UNITS[g],
                "robust_UAR": certificates.uar_within(g, b),
                "median_radius": float(certificates.budget_radius(g, b).median()),
                "forward_passes_per_utterance": float(smoothing.n0 + smoothing.n),
                **(
                    {
                        "robust_UAR_under_attack": attacked.uar(under_attack[under_attack_key(result_key(g, b))]),
                        # Of the base classifier: each of the attack's passes averages ``draws`` noisy copies.
                        "attack_forward_passes_per_utterance": attacked.forward_passes_per_utterance(g, b) * draws,
                    }
                    if (g, b) in attacked_budgets
                    else {}
                ),
            }
            for g, b in budgets
        ],
        "per_utterance": [
            {
                "id": utterance,
                "emotion": labels[int(certificates.targets[i])],
                "correct": bool(certificates.correct[i]),
                "robust": {key: bool(value[i]) for key, value in certified.items()},
                "certificate": {
                    "prediction": labels[int(certificates.prediction[i])] if certificates.prediction[i] >= 0 else None,
                    "p_lower": float(certificates.p_lower[i]),
                    "radius": float(certificates.radius[i]),
                    "signal_norm": float(certificates.signal_norm[i]),
                },
                **(
                    {"under_attack": {key: bool(value[i]) for key, value in under_attack.items()}}
                    if under_attack
                    else {}
                ),
            }
            for i, utterance in enumerate(certificates.ids)
        ],
        **provenance(device),
    }


def write_entry(folder, entry):
    """Writes ``entry.json`` into ``folder`` (main process); returns its path."""
    if not if_main_process():
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ENTRY_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(entry, f, indent=1)
    return path


def read_entries(folder):
    """Every ``entry.json`` under ``folder`` (searched recursively), sorted by path, each with its ``path``."""
    entries = []
    for root, _, files in sorted(os.walk(folder)):
        if ENTRY_FILE in files:
            with open(os.path.join(root, ENTRY_FILE), encoding="utf-8") as f:
                entries.append({**json.load(f), "path": os.path.join(root, ENTRY_FILE)})
    return entries
