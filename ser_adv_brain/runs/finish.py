"""What ends every training run: the robustness reports (the paper's FGSM and the attack suite), the pictures
and the export of the pretrained interface with its model card."""

import logging
import os

from speechbrain.utils.distributed import if_main_process, run_on_main

from ser_adv_brain.evaluation.masking import destroy_plan, universal_check_plan
from ser_adv_brain.evaluation.progress import BatchProgress, evaluation_identity, plan_settings, progress_path
from ser_adv_brain.evaluation.suite import evaluate_suite, suite_entries, suite_plan
from ser_adv_brain.evaluation.triptych import write_triptych
from ser_adv_brain.evaluation.universal import CACHE_FOLDER, learn_universal
from ser_adv_brain.interface import export_interface
from ser_adv_brain.reports.entry import code_version, make_entry, write_entry
from ser_adv_brain.reports.fgsm_report import write_fgsm_report
from ser_adv_brain.reports.model_card import write_model_card
from ser_adv_brain.reports.plots import draw_run, pyplot
from ser_adv_brain.reports.suite_report import fgsm_beside_robust, write_suite_report
from ser_adv_brain.runs.reload import TrainedModel

logger = logging.getLogger(__name__)


def attach_sources(entries, device):
    """Gives every attack that runs on another model (a transfer attack) that folder's restored model, once."""
    for entry in entries:
        if entry.attack.needs_source_model and entry.attack.source_model is None:
            entry.attack.attach_source(TrainedModel(entry.attack.source, [f"--device={device}"]))


def attack_settings(hparams):
    """The yaml's settings of the attack reports, as ``report_attacks`` takes them."""
    keys = ("attack", "eval_eps", "attack_suite", "suite_budgets", "suite_early_exit", "masking_check_eps")
    return {key: hparams[key] for key in keys}


def report_attacks(
    brain,
    hparams,
    datasets,
    max_key,
    attack,
    eval_eps,
    attack_suite,
    suite_budgets,
    suite_early_exit,
    masking_check_eps,
    splits=("valid", "test"),
    output_folder=None,
    tier=None,
):
    """The paper's FGSM report and the attack suite's, for each split; writes and logs both.

    The FGSM report (``robustness.csv``, the first table of ``robustness.md``) gives
    UAR on real data and on ``attack``'s over ``eval_eps``, as the paper does; the
    suite (``attack_suite.csv``, the rest of ``robustness.md``) gives UAR under every
    attack of ``attack_suite`` at ``suite_budgets``, robust UAR and the
    gradient-masking checks at ``masking_check_eps`` (see ``ser_adv_brain.evaluation.suite``); a universal
    perturbation is first learnt on the ``train`` split at each of its budgets, or read back from the run's
    ``universal_perturbations/`` (``ser_adv_brain.evaluation.universal``).
    The checkpoint attacked is the one ``max_key`` selects (``selection_key``). For a model
    that takes the waveform (``SelfSupervisedClassifier``), ``attack`` is a waveform attack (FGSM on
    the samples: ``WaveformPGD`` with one step) and ``masking_check_eps`` an SNR in dB.
    Then the pictures (``ser_adv_brain.reports.plots``) are drawn and, where the test split was
    attacked, the benchmark entry of the model written (``entry.json``, ``ser_adv_brain.reports.entry``).

    Arguments
    ---------
    output_folder : str or None
        Where the reports go; the run's own folder if None.
    tier : str or None
        The name of the suite's composition, for the entry (``ser_adv_brain.evaluation.tiers``);
        None: the run's own ``attack_suite`` (``"yaml"`` in the entry).

    Returns
    -------
    fgsm : dict
        split -> eps -> ``ConfusionMatrix``.
    suite : dict
        split -> ``SplitOutcomes``.
    """
    output_folder = output_folder or hparams["output_folder"]
    os.makedirs(output_folder, exist_ok=True)
    loader_kwargs = hparams["test_dataloader_options"]
    fgsm = {
        split: brain.evaluate_under_attack(
            datasets[split], attack, eval_eps, max_key=max_key, loader_kwargs=loader_kwargs
        )
        for split in splits
    }
    labels = hparams["label_encoder"].decode_ndim(list(range(hparams["n_classes"])))
    title = f"{hparams['experiment_name']}: attack {attack!r}"
    table = write_fgsm_report(fgsm, output_folder, title, labels, fake_eps=attack.eps, threat_model=attack.threat_model)
    entries = suite_entries(attack_suite)
    attach_sources(entries, brain.device)
    plan = suite_plan(entries, suite_budgets)
    checks = destroy_plan(entries, masking_check_eps, waveform=brain.takes_waveform) + universal_check_plan(plan)
    # Universal perturbations learn on the training split (never on what they attack), kept in the run's folder.
    universal_folder = os.path.join(hparams["output_folder"], CACHE_FOLDER)
    learn_universal(brain, plan, datasets["train"], loader_kwargs, max_key, universal_folder)
    wavs = os.path.join(output_folder, "adversarial_wavs")
    # Each split's outcomes are kept batch by batch until the reports are written: a killed evaluation resumes.
    checkpoint, version = brain.checkpointer.find_checkpoint(max_key=max_key), code_version()
    progress = {
        split: BatchProgress(
            progress_path(output_folder, "suite", split),
            evaluation_identity(
                checkpoint,
                datasets[split].data_ids,
                version,
                plan=plan_settings(plan + checks),
                early_exit=bool(suite_early_exit),
            ),
        )
        for split in splits
    }
    suite = {
        split: evaluate_suite(
            brain,
            datasets[split],
            plan + checks,
            suite_early_exit,
            loader_kwargs,
            max_key,
            wav_pairs=(wavs, 3) if split == splits[-1] and if_main_process() else None,
            progress=progress[split],
        )
        for split in splits
    }
    title = f"{hparams['experiment_name']}: attack suite" + (f", {tier} tier" if tier else "")
    report = write_suite_report(suite, plan, checks, output_folder, title, suite_early_exit)
    logger.info(f"Robustness (UAR on real and FGSM data):\n{table}")
    logger.info(f"Attack suite:\n{report}")
    if not brain.takes_waveform:  # the comparison is on the features' Linf budgets
        logger.info(f"The paper's FGSM report beside robust UAR:\n{fgsm_beside_robust(fgsm, suite, plan)}")
    if "test" in suite:
        entry = make_entry(
            hparams,
            suite["test"],
            plan,
            tier or "yaml",
            "test",
            suite_early_exit,
            brain.chosen_training_step,
            brain.device,
        )
        write_entry(output_folder, entry)
    for kept in progress.values():
        kept.remove()
    run_on_main(draw_run_pictures, args=[brain, hparams, datasets[splits[-1]], attack, output_folder])
    return fgsm, suite


def export_checkpoint(brain, hparams, max_key="UAR", corpus=None):
    """Exports a checkpoint (the best by ``max_key``; the latest if None) as a
    pretrained interface in ``<output_folder>/interface`` (main process), with its
    model card (``ser_adv_brain.reports.model_card``; ``corpus`` is a key of its ``CORPORA``)."""
    folder = os.path.join(hparams["output_folder"], "interface")
    run_on_main(
        export_interface,
        kwargs={
            "checkpoint": brain.checkpointer.find_checkpoint(max_key=max_key),
            "label_encoder": hparams["label_encoder"],
            "training_yaml": os.path.join(hparams["output_folder"], "hyperparams.yaml"),
            "folder": folder,
            "title": f"{hparams['experiment_name']}: {hparams['select_checkpoint']} checkpoint",
            "takes_waveform": brain.takes_waveform,
        },
    )
    run_on_main(write_model_card, args=[hparams, folder, corpus])
    return folder


def draw_run_pictures(brain, hparams, dataset, attack, folder):
    """The end-of-run pictures: the triptych's data from ``dataset`` (a model on log-Mel features: the
    triptych shows them), then every picture of ``folder``."""
    if pyplot() is None:
        return []
    if not brain.takes_waveform:
        write_triptych(brain, hparams, dataset, attack, folder)
    paths = draw_run(folder)
    logger.info(f"Pictures: {', '.join(os.path.basename(p) for p in paths)} in {folder}")
    return paths
