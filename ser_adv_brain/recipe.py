"""What every corpus recipe does after its data preparation: train, evaluate, report, export.

Each ``recipes/<corpus>/train.py`` prepares its manifests and then calls
``train_and_evaluate``, so that the recipes differ only in their data.
"""

import logging
import os

from speechbrain.utils.distributed import run_on_main

from ser_adv_brain.dataio import dataio_prep
from ser_adv_brain.distributed import set_collective_timeout
from ser_adv_brain.inference import export_interface
from ser_adv_brain.model_card import write_model_card
from ser_adv_brain.robustness import write_robustness_report
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

    Also sets ``hparams["label_encoder"]`` and gives it to the attack (a
    targeted attack's emotion must be in it: checked before any training).
    Files that ``skip_bad_files`` lets through are left out of the datasets.
    """
    # The main process scans (and caches); every process gets its verdict.
    skipped = run_on_main(validate_inputs, args=[hparams])
    datasets, hparams["label_encoder"] = dataio_prep(hparams, exclude=skipped)
    hparams["attack"].set_class_names(hparams["label_encoder"])
    return datasets


def report_robustness(brain, hparams, datasets, splits=("valid", "test")):
    """UAR on real and fake data over ``hparams['eval_eps']`` for dev and test; writes the report.

    The checkpoint attacked is the one ``hparams['select_checkpoint']`` selects.
    """
    max_key = selection_key(hparams)
    results = {
        split: brain.evaluate_robustness(
            datasets[split], hparams["eval_eps"], max_key=max_key, loader_kwargs=hparams["test_dataloader_options"]
        )
        for split in splits
    }
    table = write_robustness_report(
        results,
        hparams["output_folder"],
        f"{hparams['experiment_name']}: attack {hparams['attack']!r}",
        hparams["label_encoder"].decode_ndim(list(range(hparams["n_classes"]))),
    )
    logger.info(f"Robustness (UAR on real and FGSM data):\n{table}")
    return results


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
