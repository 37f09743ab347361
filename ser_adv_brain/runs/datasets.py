"""A run's datasets, checked before any training: manifests, audio, hyperparameters, the attacks' label set."""

from speechbrain.utils.distributed import run_on_main

from ser_adv_brain.data.dataio import dataio_prep
from ser_adv_brain.data.validation import validate_inputs
from ser_adv_brain.evaluation.suite import check_attacks_fit, suite_entries, suite_plan


def checked_datasets(hparams, manifests, n_frames):
    """Validates the manifests, audio and hyperparameters, then builds the datasets (``dataio_prep``).

    Also sets ``hparams["label_encoder"]`` and gives it to the attack and to
    the attack suite's (a targeted attack's emotion must be in it), and checks
    that ``suite_budgets`` covers the suite's threat models and that a model that
    takes the waveform gets waveform attacks only: before any training.
    Files that ``skip_bad_files`` lets through are left out of the datasets.
    """
    for key in ("attack", "training_attack", "attack_suite"):
        attacks = hparams.get(key)
        check_attacks_fit(hparams["model"], attacks if isinstance(attacks, list) else [attacks], key)
    # The main process scans (and caches); every process gets its verdict.
    skipped = run_on_main(validate_inputs, args=[hparams])
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests, n_frames, exclude=skipped)
    for attack in [hparams["attack"], hparams.get("training_attack"), *hparams["attack_suite"]]:
        if attack is None:
            continue
        attack.set_class_names(hparams["label_encoder"])
    suite_plan(suite_entries(hparams["attack_suite"]), hparams["suite_budgets"])
    return datasets
