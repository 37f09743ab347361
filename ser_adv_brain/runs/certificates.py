"""Randomised smoothing's certificates for a trained run: what ends a smoothing run, and ``ser-adv certify``."""

import logging
import os

import speechbrain as sb
import torch
import tqdm
from speechbrain.utils.distributed import if_main_process, run_on_main

from ser_adv_brain.audio.loading import frames_to_samples
from ser_adv_brain.evaluation.certification import attack_smoothed, certified_budgets, certify_split
from ser_adv_brain.evaluation.progress import (
    BatchProgress,
    evaluation_identity,
    plan_settings,
    progress_path,
    scalar_settings,
)
from ser_adv_brain.evaluation.suite import suite_entries, suite_plan
from ser_adv_brain.models import WaveformClassifier
from ser_adv_brain.reports.certification_report import policy_markdown, write_certification_report
from ser_adv_brain.reports.entry import CERTIFIED_TIER, code_version, make_certified_entry, write_entry
from ser_adv_brain.reports.plots import plot_certified_uar
from ser_adv_brain.training.brain import broadcast_buffers

logger = logging.getLogger(__name__)


def smoothing_base(brain, domain):
    """The base classifier whose input the smoothing's noise is added to: the model, or the waveform pipeline."""
    if domain == "features":
        return brain.model
    return WaveformClassifier(brain.modules.compute_features, brain.modules.normalizer, brain.model).eval()


def smoothing_batches(brain, dataset, loader_kwargs, domain, what):
    """``(ids, inputs, targets)`` of a split, the inputs in the smoothing's domain (samples, or features)."""
    loader = brain.make_dataloader(dataset, sb.Stage.TEST, **{**loader_kwargs, "ckpt_prefix": None})
    for batch in tqdm.tqdm(loader, desc=f"{what} ({len(dataset)} utterances)", disable=brain.noprogressbar):
        batch = batch.to(brain.device)
        inputs = batch.sig.data
        if domain == "features":
            with torch.no_grad():
                inputs = brain.compute_features(inputs)
        yield list(batch.id), inputs, brain.targets(batch)


def smoothing_plan(smoothing, attacks, budgets):
    """The adaptive evaluation's plan (``suite_plan``): the attacks of the smoothing's domain at their threat
    models' ``budgets``; a ``ValueError`` if none is left or a threat model has no budgets."""
    entries = [entry for entry in suite_entries(attacks) if entry.domain == smoothing.domain]
    if not entries:
        raise ValueError(f"none of the attacks perturbs the {smoothing.domain}, where {smoothing!r} adds its noise.")
    return suite_plan(entries, budgets)


def report_certificates(
    brain,
    hparams,
    datasets,
    max_key,
    smoothing,
    splits=("test",),
    output_folder=None,
    plan=(),
    budgets=None,
    early_exit=True,
    attack_draws=8,
):
    """Certifies the smoothed classifier of a run's checkpoint on ``splits``, optionally attacks it, writes the
    report (``ser_adv_brain.reports.certification_report``), ``certified_uar.png`` and, for the test split, the
    benchmark entry of the ``certified`` tier (``<output_folder>/certified/entry.json``,
    ``ser_adv_brain.reports.entry.make_certified_entry``).

    Arguments
    ---------
    brain : EmotionBrain
        Its checkpoint ``max_key`` selects the base classifier.
    hparams : dict
        The run's: ``n_classes``, ``label_encoder``, ``suite_budgets`` (the budgets the report reads
        certified UAR at), ``test_dataloader_options``, the feature sizes.
    datasets : dict
        split -> dataset.
    smoothing : RandomizedSmoothing
    plan : list
        The adaptive evaluation's plan (``smoothing_plan``; ``attack_smoothed``); empty: certificates only.
    budgets : dict or None
        Threat model -> budgets the report reads certified UAR at; None: the run's ``suite_budgets``.
    early_exit, attack_draws :
        ``attack_smoothed``'s ``early_exit`` and ``draws`` (noisy copies per forward pass of the attacks).

    Returns
    -------
    certificates : dict
        split -> ``SplitCertificates``.
    attacked : dict
        split -> ``SplitOutcomes`` (empty without attacks).
    """
    output_folder = output_folder or hparams["output_folder"]
    budgets = hparams["suite_budgets"] if budgets is None else budgets
    n_classes, loader_kwargs = hparams["n_classes"], hparams["test_dataloader_options"]
    brain.on_evaluate_start(max_key=max_key)
    brain.modules.eval()
    broadcast_buffers(brain.modules)
    base = smoothing_base(brain, smoothing.domain)
    logger.info(f"Certifying {smoothing!r} on {', '.join(splits)}")
    # Certificates and attack outcomes are kept batch by batch: a killed certification resumes (each
    # utterance's noise is keyed by its ID, so nothing changes). The certificates' file stays after the report:
    # the adaptive attack added later to the same run and smoothing reads them instead of voting again.
    checkpoint, version = brain.checkpointer.find_checkpoint(max_key=max_key), code_version()

    def progress_of(what, split, **evaluated):
        identity = evaluation_identity(
            checkpoint, datasets[split].data_ids, version, smoothing=scalar_settings(smoothing), **evaluated
        )
        return BatchProgress(progress_path(output_folder, what, split), identity)

    attack_evaluated = {"plan": plan_settings(plan), "early_exit": bool(early_exit), "draws": attack_draws}
    certified_progress = {split: progress_of("certificates", split) for split in splits}
    attacked_progress = {
        split: progress_of("smoothed_attack", split, **attack_evaluated) for split in (splits if plan else ())
    }
    certificates = {
        split: certify_split(
            smoothing,
            base,
            smoothing_batches(brain, datasets[split], loader_kwargs, smoothing.domain, "certificates"),
            n_classes,
            certified_progress[split],
        )
        for split in splits
    }
    attacked = {
        split: attack_smoothed(
            smoothing,
            base,
            plan,
            smoothing_batches(brain, datasets[split], loader_kwargs, smoothing.domain, "adaptive attack"),
            n_classes,
            early_exit,
            attack_draws,
            attacked_progress[split],
        )
        for split in (splits if plan else ())
    }
    labels = hparams["label_encoder"].decode_ndim(list(range(n_classes)))
    facts = {
        "model": type(brain.model).__name__,
        "sample_rate": hparams["sample_rate"],
        "samples": frames_to_samples(hparams["n_frames"], hparams["hop_length"]),
        "frames": hparams["n_frames"],
        "n_mels": hparams["n_mels"],
    }
    title = f"{hparams['experiment_name']}: randomised smoothing, {smoothing!r}"
    if if_main_process():
        markdown = write_certification_report(
            certificates, smoothing, output_folder, title, facts, labels, budgets, attacked, plan, attack_draws
        )
        logger.info(f"Certificates ({output_folder}/certification.md):\n{markdown}")
        if "test" in certificates:
            entry = make_certified_entry(
                hparams,
                certificates["test"],
                smoothing,
                certified_budgets(smoothing.domain, budgets),
                policy_markdown(smoothing, facts),
                brain.chosen_training_step,
                brain.device,
                attacked.get("test"),
                plan,
                early_exit,
                attack_draws,
            )
            logger.info(f"Benchmark entry: {write_entry(os.path.join(output_folder, CERTIFIED_TIER), entry)}")
    for progress in attacked_progress.values():
        progress.remove()
    run_on_main(plot_certified_uar, args=[os.path.join(output_folder, "certified_uar.csv")])
    return certificates, attacked
