"""What every corpus recipe does after its data preparation: train, evaluate, report, export.

Each ``recipes/<corpus>/train.py`` prepares its manifests and then calls
``train_and_evaluate``, so that the recipes differ only in their data.
"""

import logging
import os

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechbrain.utils.distributed import if_main_process, run_on_main

from ser_adv_brain.attack_suite import evaluate_suite, suite_entries, suite_plan
from ser_adv_brain.dataio import dataio_prep
from ser_adv_brain.distributed import set_collective_timeout
from ser_adv_brain.inference import export_interface
from ser_adv_brain.masking_checks import destroy_plan
from ser_adv_brain.model_card import write_model_card
from ser_adv_brain.plots import draw_run_pictures
from ser_adv_brain.robustness import write_robustness_report
from ser_adv_brain.suite_report import fgsm_beside_robust, write_suite_report
from ser_adv_brain.validation import validate_inputs

logger = logging.getLogger(__name__)

# yaml ``select_checkpoint`` -> the key ``Brain.evaluate`` recovers by. None recovers the most
# recent checkpoint, which ``save_and_keep_only`` keeps beside the best (keep_recent=True).
CHECKPOINT_SELECTION = {"best_dev": "UAR", "final": None}


def selection_key(hparams):
    """The checkpoint to test: best dev UAR (the default) or the final one (the authors' code).

    Example
    -------
    >>> selection_key({"select_checkpoint": "final"}) is None
    True
    """
    choice = hparams.get("select_checkpoint", "best_dev")
    if choice not in CHECKPOINT_SELECTION:
        raise ValueError(f"select_checkpoint must be one of {sorted(CHECKPOINT_SELECTION)}, got {choice!r}")
    return CHECKPOINT_SELECTION[choice]


def build_brain(hparams, run_opts):
    """Instantiates the yaml's ``brain_class`` with its modules, optimiser and checkpointer."""
    return hparams["brain_class"](
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )


def checked_datasets(hparams):
    """Validates the manifests, audio and hyperparameters, then builds the datasets.

    Also sets ``hparams["label_encoder"]`` and gives it to the attack and to
    the attack suite's (a targeted attack's emotion must be in it), and checks
    that ``suite_budgets`` covers the suite's threat models: before any training.
    Files that ``skip_bad_files`` lets through are left out of the datasets.
    """
    # The main process scans (and caches); every process gets its verdict.
    skipped = run_on_main(validate_inputs, args=[hparams])
    datasets, hparams["label_encoder"] = dataio_prep(hparams, exclude=skipped)
    for attack in [hparams["attack"], *hparams["attack_suite"]]:
        attack.set_class_names(hparams["label_encoder"])
    suite_plan(suite_entries(hparams["attack_suite"]), hparams["suite_budgets"])
    return datasets


def load_trained(folder, argv=(), extra_overrides=""):
    """The hparams, datasets and Brain of a training output folder, as its run saved them.

    ``argv`` holds command-line overrides and run options (as for train.py);
    ``extra_overrides`` is yaml appended to them. The Brain is built, not yet
    restored: evaluations restore the checkpoint ``select_checkpoint`` names.
    """
    hparams_file = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(hparams_file):
        raise FileNotFoundError(f"{folder!r} is not a training output folder: it has no hyperparams.yaml.")
    _, run_opts, overrides = sb.parse_arguments([hparams_file, *argv])
    # The saved yaml names its output folder relative to where training ran.
    overrides = (overrides or "") + f"\noutput_folder: {os.path.abspath(folder)}\n" + extra_overrides
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    datasets = checked_datasets(hparams)
    set_collective_timeout(hparams)
    return hparams, datasets, build_brain(hparams, run_opts)


def report_robustness(brain, hparams, datasets, splits=("valid", "test")):
    """The paper's FGSM report and the attack suite's, for dev and test; writes and logs both.

    The FGSM report (``robustness.csv``, the first table of ``robustness.md``) gives
    UAR on real and fake data over ``hparams['eval_eps']``, as the paper does; the
    suite (``attack_suite.csv``, the rest of ``robustness.md``) gives UAR under every
    attack of ``hparams['attack_suite']`` at ``hparams['suite_budgets']``, robust UAR
    and the gradient-masking checks (see ``ser_adv_brain.attack_suite``). The
    checkpoint attacked is the one ``hparams['select_checkpoint']`` selects.
    Then the run's pictures (``ser_adv_brain.plots``) are drawn.

    Returns
    -------
    fgsm : dict
        split -> eps -> ``ConfusionMatrix``.
    suite : dict
        split -> ``SplitOutcomes``.
    """
    max_key = selection_key(hparams)
    loader_kwargs = hparams["test_dataloader_options"]
    fgsm = {
        split: brain.evaluate_robustness(datasets[split], hparams["eval_eps"], max_key=max_key, loader_kwargs=loader_kwargs)
        for split in splits
    }
    labels = hparams["label_encoder"].decode_ndim(list(range(hparams["n_classes"])))
    title = f"{hparams['experiment_name']}: attack {hparams['attack']!r}"
    table = write_robustness_report(fgsm, hparams["output_folder"], title, labels, fake_eps=hparams["attack"].eps)
    entries = suite_entries(hparams["attack_suite"])
    plan = suite_plan(entries, hparams["suite_budgets"])
    checks = destroy_plan(entries, hparams["masking_check_eps"])
    wavs = os.path.join(hparams["output_folder"], "adversarial_wavs")
    suite = {
        split: evaluate_suite(
            brain, datasets[split], plan + checks, hparams["suite_early_exit"], loader_kwargs, max_key,
            wav_pairs=(wavs, 3) if split == splits[-1] and if_main_process() else None,
        )
        for split in splits
    }  # fmt: skip
    report = write_suite_report(suite, plan, checks, hparams["output_folder"], f"{hparams['experiment_name']}: attack suite", hparams["suite_early_exit"])
    logger.info(f"Robustness (UAR on real and FGSM data):\n{table}")
    logger.info(f"Attack suite:\n{report}")
    logger.info(f"The paper's FGSM report beside robust UAR:\n{fgsm_beside_robust(fgsm, suite, plan)}")
    run_on_main(draw_run_pictures, args=[brain, hparams, datasets[splits[-1]]])
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
            "title": f"{hparams['experiment_name']}: {hparams.get('select_checkpoint', 'best_dev')} checkpoint",
        },
    )
    run_on_main(write_model_card, args=[hparams, folder, corpus])
    return folder


def train_and_evaluate(hparams, run_opts, corpus=None):
    """Checks the inputs, trains, tests the selected checkpoint, reports its robustness and exports it.

    ``hparams['select_checkpoint']`` (optional) picks the checkpoint tested and
    exported: ``best_dev`` (the default) or ``final``. The export is a
    pretrained interface in ``<output_folder>/interface`` (see ``ser_adv_brain.inference``),
    with a model card that describes ``corpus`` (a key of ``ser_adv_brain.model_card.CORPORA``;
    None when the run was given its manifests).

    Returns
    -------
    brain, datasets
    """
    max_key = selection_key(hparams)  # checked before training, not after
    datasets = checked_datasets(hparams)
    set_collective_timeout(hparams)  # after the main process's data validation, which the others wait for
    brain = build_brain(hparams, run_opts)
    brain.fit_normalizer(datasets["train"], hparams["test_dataloader_options"])
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["dataloader_options"],
        valid_loader_kwargs=hparams["test_dataloader_options"],
    )
    # SpeechBrain's evaluate() writes into the kwargs it gets: give it a copy.
    brain.evaluate(datasets["test"], max_key=max_key, test_loader_kwargs=dict(hparams["test_dataloader_options"]))
    report_robustness(brain, hparams, datasets)
    export_checkpoint(brain, hparams, max_key, corpus)
    return brain, datasets
