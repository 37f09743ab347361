"""The steps of a recipe's main block that every corpus shares, and the reloading of a trained run.

A ``recipes/<corpus>/train.py`` checks and loads its data with
``checked_datasets``, trains and tests its Brain, then calls
``report_attacks`` and ``export_checkpoint``. Evaluation commands reload
a finished run with ``load_trained``.
"""

import logging
import os

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechbrain.utils.distributed import if_main_process, run_on_main

from ser_adv_brain.brain import EmotionBrain
from ser_adv_brain.attack_suite import evaluate_suite, suite_entries, suite_plan
from ser_adv_brain.dataio import dataio_prep, manifests_of
from ser_adv_brain.distributed import set_collective_timeout
from ser_adv_brain.inference import export_interface
from ser_adv_brain.masking_checks import destroy_plan
from ser_adv_brain.model_card import write_model_card
from ser_adv_brain.fgsm_report import write_fgsm_report
from ser_adv_brain.plots import draw_run_pictures
from ser_adv_brain.suite_report import fgsm_beside_robust, write_suite_report
from ser_adv_brain.validation import validate_inputs

logger = logging.getLogger(__name__)

# yaml ``select_checkpoint`` -> the key ``Brain.evaluate`` recovers by. None recovers the most
# recent checkpoint, which ``save_and_keep_only`` keeps beside the best (keep_recent=True).
CHECKPOINT_SELECTION = {"best_dev": "UAR", "final": None}


def selection_key(choice):
    """The key that selects the checkpoint to test (yaml ``select_checkpoint``): best dev UAR or the final one (the authors' code).

    Example
    -------
    >>> selection_key("final") is None
    True
    """
    if choice not in CHECKPOINT_SELECTION:
        raise ValueError(f"select_checkpoint must be one of {sorted(CHECKPOINT_SELECTION)}, got {choice!r}")
    return CHECKPOINT_SELECTION[choice]


def build_brain(hparams, run_opts, brain_class=EmotionBrain):
    """Instantiates ``brain_class`` with the yaml's modules, optimiser and checkpointer.

    The default ``EmotionBrain`` evaluates under attack but has no
    ``compute_forward``: training needs a recipe's Brain.
    """
    return brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        training_step=hparams["training_step"],
        sync_batchnorm=hparams["sync_batchnorm"],
    )


def checked_datasets(hparams, manifests, n_frames):
    """Validates the manifests, audio and hyperparameters, then builds the datasets (``dataio_prep``).

    Also sets ``hparams["label_encoder"]`` and gives it to the attack and to
    the attack suite's (a targeted attack's emotion must be in it), and checks
    that ``suite_budgets`` covers the suite's threat models: before any training.
    Files that ``skip_bad_files`` lets through are left out of the datasets.
    """
    # The main process scans (and caches); every process gets its verdict.
    skipped = run_on_main(validate_inputs, args=[hparams])
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests, n_frames, exclude=skipped)
    for attack in [hparams["attack"], hparams.get("training_attack"), *hparams["attack_suite"]]:
        if attack is None:
            continue
        attack.set_class_names(hparams["label_encoder"])
    suite_plan(suite_entries(hparams["attack_suite"]), hparams["suite_budgets"])
    return datasets


def load_trained(folder, argv=(), extra_overrides=""):
    """The hparams, datasets and Brain of a training output folder, as its run saved them.

    ``argv`` holds command-line overrides and run options (as for train.py);
    ``extra_overrides`` is yaml appended to them. The Brain is built, not yet
    restored: evaluations restore the checkpoint ``select_checkpoint`` names.
    """
    if any(arg.split("=", 1)[0] == "--output_folder" for arg in argv):
        raise ValueError(
            f"--output_folder: the results are written into {folder!r} itself; to keep its present ones, "
            "copy the folder and give the copy."
        )
    hparams_file = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(hparams_file):
        raise FileNotFoundError(f"{folder!r} is not a training output folder: it has no hyperparams.yaml.")
    _, run_opts, overrides = sb.parse_arguments([hparams_file, *argv])
    # The saved yaml names its output folder relative to where training ran.
    overrides = (overrides or "") + f"\noutput_folder: {os.path.abspath(folder)}\n" + extra_overrides
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    datasets = checked_datasets(hparams, manifests_of(hparams), hparams["n_frames"])
    set_collective_timeout(hparams["ddp_timeout_minutes"])
    brain = build_brain(hparams, run_opts)
    # Without a checkpoint an evaluation would attack the untrained model, with only an INFO line.
    if brain.checkpointer.find_checkpoint() is None:
        raise FileNotFoundError(
            f"{folder!r} has no checkpoint in {brain.checkpointer.checkpoints_dir}: train it first. (Its "
            "hyperparams.yaml names the folders of the run as it was trained; if the folder was moved since, "
            "change those paths in it.)"
        )
    return hparams, datasets, brain


def attack_settings(hparams):
    """The yaml's settings of the attack reports, as ``report_attacks`` takes them."""
    keys = ("attack", "eval_eps", "attack_suite", "suite_budgets", "suite_early_exit", "masking_check_eps")
    return {key: hparams[key] for key in keys}


def report_attacks(
    brain, hparams, datasets, max_key, attack, eval_eps, attack_suite, suite_budgets, suite_early_exit,
    masking_check_eps, splits=("valid", "test"),
):  # fmt: skip
    """The paper's FGSM report and the attack suite's, for dev and test; writes and logs both.

    The FGSM report (``robustness.csv``, the first table of ``robustness.md``) gives
    UAR on real data and on ``attack``'s over ``eval_eps``, as the paper does; the
    suite (``attack_suite.csv``, the rest of ``robustness.md``) gives UAR under every
    attack of ``attack_suite`` at ``suite_budgets``, robust UAR and the
    gradient-masking checks at ``masking_check_eps`` (see ``ser_adv_brain.attack_suite``).
    The checkpoint attacked is the one ``max_key`` selects (``selection_key``).
    Then the run's pictures (``ser_adv_brain.plots``) are drawn.

    Returns
    -------
    fgsm : dict
        split -> eps -> ``ConfusionMatrix``.
    suite : dict
        split -> ``SplitOutcomes``.
    """
    loader_kwargs = hparams["test_dataloader_options"]
    fgsm = {
        split: brain.evaluate_under_attack(datasets[split], attack, eval_eps, max_key=max_key, loader_kwargs=loader_kwargs)
        for split in splits
    }
    labels = hparams["label_encoder"].decode_ndim(list(range(hparams["n_classes"])))
    title = f"{hparams['experiment_name']}: attack {attack!r}"
    table = write_fgsm_report(fgsm, hparams["output_folder"], title, labels, fake_eps=attack.eps)
    entries = suite_entries(attack_suite)
    plan = suite_plan(entries, suite_budgets)
    checks = destroy_plan(entries, masking_check_eps)
    wavs = os.path.join(hparams["output_folder"], "adversarial_wavs")
    suite = {
        split: evaluate_suite(
            brain, datasets[split], plan + checks, suite_early_exit, loader_kwargs, max_key,
            wav_pairs=(wavs, 3) if split == splits[-1] and if_main_process() else None,
        )
        for split in splits
    }  # fmt: skip
    report = write_suite_report(suite, plan, checks, hparams["output_folder"], f"{hparams['experiment_name']}: attack suite", suite_early_exit)
    logger.info(f"Robustness (UAR on real and FGSM data):\n{table}")
    logger.info(f"Attack suite:\n{report}")
    logger.info(f"The paper's FGSM report beside robust UAR:\n{fgsm_beside_robust(fgsm, suite, plan)}")
    run_on_main(draw_run_pictures, args=[brain, hparams, datasets[splits[-1]], attack])
    return fgsm, suite


def export_checkpoint(brain, hparams, max_key="UAR", corpus=None):
    """Exports a checkpoint (the best by ``max_key``; the latest if None) as a
    pretrained interface in ``<output_folder>/interface`` (main process), with its
    model card (``ser_adv_brain.model_card``; ``corpus`` is a key of its ``CORPORA``)."""
    folder = os.path.join(hparams["output_folder"], "interface")
    run_on_main(
        export_interface,
        kwargs={
            "checkpoint": brain.checkpointer.find_checkpoint(max_key=max_key),
            "label_encoder": hparams["label_encoder"],
            "training_yaml": os.path.join(hparams["output_folder"], "hyperparams.yaml"),
            "folder": folder,
            "title": f"{hparams['experiment_name']}: {hparams['select_checkpoint']} checkpoint",
        },
    )
    run_on_main(write_model_card, args=[hparams, folder, corpus])
    return folder
