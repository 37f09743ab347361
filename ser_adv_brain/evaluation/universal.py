"""The suite's universal perturbations: learnt on the run's training split once per budget, kept per run.

Every attack of a suite's plan that ``needs_training_data`` (``UniversalPerturbation``) learns its ``v``
at every budget of its threat model before any split is attacked, from the training split alone, on the
checkpoint the suite attacks. Each ``v`` is kept in ``<run>/universal_perturbations/``: ``<tag>.pt`` (``v``,
its reference level, the training utterances, what it cost, and its identity) and ``<tag>.wav`` (``v`` as
it is added, 16-bit) beside ``<tag>_loud.wav`` (the same, peak-normalised, to listen to). Evaluating the
same run again reads ``v`` back when its identity is the same: the budget, the attack's options (target,
labels, epochs, step, length, seed), the model (the run's checkpoint, or an interface's parameters:
``ser-adv attack-interface --training_manifest``) and the training split's rows.
"""

import hashlib
import json
import logging
import math
import os

import soundfile
import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

from ser_adv_brain.attacks.universal_perturbation import LearntPerturbation
from ser_adv_brain.training.checkpoints import checkpoint_identity

logger = logging.getLogger(__name__)

CACHE_FOLDER = "universal_perturbations"  # in the run's output folder


def split_digest(dataset):
    """A digest of a dataset's rows (IDs, files, labels): which utterances a ``v`` was learnt on."""
    rows = {key: dataset.data[key] for key in dataset.data_ids}
    return hashlib.blake2b(json.dumps(rows, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def identity_of(attack, budget, model, training_split):
    """What a learnt ``v`` depends on, as a JSON-able dict (``model``: JSON-able, the model's identity, such as a
    run's ``checkpoint_identity``)."""
    return {
        "attack": type(attack).__name__,
        "name": attack.name,
        "target": attack.target_index,
        "label_source": attack.label_source,
        "model_mode": attack.model_mode,
        "epochs": attack.epochs,
        "rel_step_size": attack.rel_step_size,
        "length": attack.length,
        "seed": attack.seed,
        "budget": float(budget),
        "checkpoint": model,  # the key kept from when only runs learnt: the runs' caches stay valid
        "training_split": training_split,
    }


def cache_tag(identity):
    """``Universal_40dB_<hash>``: the files' name, readable and unique to the identity."""
    digest = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=6).hexdigest()
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in identity["name"]).strip("_")
    return f"{name}_{identity['budget']:g}dB_{digest}"


def write_perturbation_wavs(path_stem, perturbation, sample_rate):
    """``v`` as a 16-bit wav (exactly what is added) and peak-normalised to -1 dBFS (to listen to)."""
    v = perturbation.cpu().numpy()
    soundfile.write(f"{path_stem}.wav", v, sample_rate, subtype="PCM_16")
    peak = float(abs(perturbation).max())
    loud = v * (10 ** (-1 / 20) / peak) if peak > 0 else v
    soundfile.write(f"{path_stem}_loud.wav", loud, sample_rate, subtype="PCM_16")


def learnt_perturbation(attack, model, batches, budget, folder, identity, sample_rate):
    """The attack's ``v`` at ``budget``: read from ``folder`` if kept there with this ``identity``, else learnt
    (``attack.learn``) and kept there with its wav files. The attack keeps it for ``run`` either way."""
    stem = os.path.join(folder, cache_tag(identity))
    if os.path.isfile(f"{stem}.pt"):
        saved = torch.load(f"{stem}.pt", weights_only=True)
        if saved["identity"] == identity:
            logger.info(f"{attack.name} at {budget:g} dB: the perturbation learnt before ({stem}.pt)")
            return attack.use(LearntPerturbation(**saved["learnt"]))
    learnt = attack.learn(model, batches, budget)
    os.makedirs(folder, exist_ok=True)
    torch.save({"identity": identity, "learnt": learnt._asdict()}, f"{stem}.pt.tmp")
    os.replace(f"{stem}.pt.tmp", f"{stem}.pt")  # a killed run leaves no half-written cache
    write_perturbation_wavs(stem, learnt.perturbation, sample_rate)
    level = 20 * math.log10(max(learnt.reference_rms, 1e-12))
    logger.info(
        f"{attack.name} at {budget:g} dB: learnt on {len(learnt.training_ids)} training utterances "
        f"(reference level {level:.1f} dBFS, {learnt.passes} passes, {learnt.fooled_share:.0%} fooled in the "
        f"last pass); {stem}.wav"
    )
    return learnt


def training_batches(brain, dataset, loader_kwargs):
    """A callable giving ``(ids, wavs, wav_lens, targets)`` for each batch of ``dataset``, on the Brain's device."""

    def batches():
        loader = brain.make_dataloader(dataset, sb.Stage.TEST, **{**(loader_kwargs or {}), "ckpt_prefix": None})
        for batch in loader:
            batch = batch.to(brain.device)
            yield list(batch.id), batch.sig.data, batch.sig.lengths, brain.targets(batch)

    return batches


def learn_all(brain, steps, dataset, loader_kwargs, max_key, folder, model_identity=None):
    """``learnt_perturbation`` for every ``(budget, entry)`` of ``steps`` on the checkpoint ``max_key`` selects
    (``model_identity`` None), or on a Brain without checkpoints whose model ``model_identity`` names."""
    brain.on_evaluate_start(max_key=max_key)
    brain.modules.eval()
    model = brain.waveform_model.eval()
    if model_identity is None:
        model_identity = checkpoint_identity(brain.checkpointer.find_checkpoint(max_key=max_key))
    training_split = split_digest(dataset)
    batches = training_batches(brain, dataset, loader_kwargs)
    for budget, entry in steps:
        identity = identity_of(entry.attack, budget, model_identity, training_split)
        learnt_perturbation(entry.attack, model, batches, budget, folder, identity, brain.hparams.sample_rate)


def learn_universal(brain, plan, dataset, loader_kwargs, max_key, folder, model_identity=None):
    """Learns every universal attack of ``plan`` at each of its budgets on ``dataset``, the training split
    (``model_identity``: as ``learn_all``'s).

    The main process learns (or reads the cache in ``folder``); the others then read what it kept, so
    every DDP process attacks with the same ``v``. Returns the ``(budget, entry)`` pairs learnt.
    """
    steps = [(budget, entry) for _, budget, entries in plan for entry in entries if entry.attack.needs_training_data]
    if steps:
        args = [brain, steps, dataset, loader_kwargs, max_key, folder, model_identity]
        run_on_main(learn_all, args=args, post_func=learn_all, post_args=args)
    return steps
