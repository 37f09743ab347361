"""Trains a fake-data detector on a trained output folder, tests it, and exports it with the interface.

Usage (detector yaml keys and run options can follow, as for train.py):
    ser-adv detector results/cnn4_vanilla/1234 hparams/detector.yaml
    ser-adv detector results/cnn4_vanilla/1234 hparams/detector.yaml \\
        --number_of_epochs=5 --output_folder=results/cnn4_vanilla/1234/detector_pgd \\
        --attack="!new:ser_adv_brain.attacks.PGD {eps: 0.02, steps: 5, eta: null, label_source: target}"

The paper's future work: a detector that recognises fake data. The classifier
of the folder (the checkpoint its ``select_checkpoint`` names) is frozen; the
yaml's ``detector`` learns, on its embedding, to tell real utterances of the
training split (label 0) from their fakes made by the yaml's ``attack``
against the classifier (label 1), fresh fakes for every batch. The checkpoint
with the best dev ROC AUC is kept. On test it is scored, every attack on every
utterance, for the training attack, the ``unseen_attacks`` and the
``adaptive_attack`` (which attacks classifier and detector together), and
writes into the detector's ``output_folder`` (``<folder>/detector`` by default):

- ``detection.csv`` and ``detection.md``: per attack, ROC AUC (real test
  utterances against their fakes), TPR at ``false_positive_rate`` (the
  threshold set on the real test scores), the classifier's UAR under the
  attack, and the UAR when a flagged fake counts as handled;
- ``interface/``: the classifier's pretrained interface with the detector,
  whose ``EmotionRecognizer`` also returns an is-adversarial score (see
  ``ser_adv_brain.interface``); its threshold is set on real dev data.
"""

import logging
import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.attacks.base import Attack
from ser_adv_brain.attacks.detector_aware_pgd import DetectorAwarePGD
from ser_adv_brain.evaluation.detection import detection_rows, name_of, score_split
from ser_adv_brain.interface import export_interface
from ser_adv_brain.metrics import detection_threshold, uar_of_correct
from ser_adv_brain.models import WaveformClassifier
from ser_adv_brain.reports.detection_report import detection_markdown, write_detection_report
from ser_adv_brain.reports.model_card import detector_card_section, model_card
from ser_adv_brain.runs.reload import load_trained
from ser_adv_brain.training.checkpoints import selection_key
from ser_adv_brain.training.detector_brain import DetectorBrain

logger = logging.getLogger(__name__)

USAGE = "usage: ser-adv detector FOLDER DETECTOR_YAML [--key=value ...]"
# The detector yaml's keys this command reads, and what each must hold.
REQUIRED_KEYS = {
    "detector": torch.nn.Module,
    "attack": Attack,
    "unseen_attacks": list,
    "adaptive_attack": DetectorAwarePGD,
    "false_positive_rate": float,
    "output_folder": str,
    "modules": dict,
    "opt_class": object,
    "dataloader_options": dict,
    "test_dataloader_options": dict,
    "epoch_counter": object,
    "train_logger": object,
    "checkpointer": object,
}


def detector_overrides(classifier_folder, embedding_dim, overrides=""):
    """The command line's yaml overrides, plus the two keys the command fills in from the classifier."""
    return (
        f"{overrides or ''}\nclassifier_folder: {os.path.abspath(classifier_folder)}\nembedding_dim: {embedding_dim}\n"
    )


def load_detector_hparams(yaml_file, overrides):
    """The detector yaml with its overrides (see ``detector_overrides``), checked key by key; errors name the
    file and the key."""
    try:
        with open(yaml_file, encoding="utf-8") as f:
            hparams = load_hyperpyyaml(f, overrides)
    except KeyError as error:  # an override of a key the yaml does not have
        raise KeyError(f"{yaml_file}: {error.args[0]} (a misspelt key on the command line?)") from error
    for key, kind in REQUIRED_KEYS.items():
        if key not in hparams:
            raise KeyError(f"{yaml_file} has no {key!r}, which the detector command needs.")
        if kind is float and isinstance(hparams[key], int) and not isinstance(hparams[key], bool):
            hparams[key] = float(hparams[key])
        if not isinstance(hparams[key], kind):
            raise TypeError(f"{yaml_file}: {key!r} must be a {kind.__name__}, got {hparams[key]!r}.")
    for index, attack in enumerate(hparams["unseen_attacks"]):
        if not isinstance(attack, Attack):
            raise TypeError(f"{yaml_file}: unseen_attacks[{index}] must be an attack plug-in, got {attack!r}.")
    if "detector" not in hparams["modules"]:
        raise KeyError(f"{yaml_file}: 'modules' must hold the 'detector' (the module that is trained).")
    if not 0.0 <= hparams["false_positive_rate"] < 1.0:
        raise ValueError(f"{yaml_file}: false_positive_rate must be in [0, 1), got {hparams['false_positive_rate']}.")
    return hparams


def run_options_only(run_opts, argv):
    """The arguments of ``argv`` that set run options (``--device``, ...), which the classifier gets too."""
    return [arg for arg in argv if arg.lstrip("-").split("=")[0] in run_opts.overridden_args]


def frozen_classifier(folder, run_argv):
    """The folder's hparams, datasets, and classifier (selected checkpoint, eval mode, no parameter gradients)."""
    hparams, datasets, brain = load_trained(folder, run_argv)
    max_key = selection_key(hparams["select_checkpoint"])
    checkpoint = brain.checkpointer.find_checkpoint(max_key=max_key)
    brain.on_evaluate_start(max_key=max_key)
    classifier = WaveformClassifier(brain.modules.compute_features, brain.modules.normalizer, brain.model).eval()
    classifier.requires_grad_(False)
    return hparams, datasets, brain, checkpoint, classifier


def export_with_detector(classifier_hparams, checkpoint, detector_hparams, detector_checkpoint, threshold, report):
    """The classifier's interface plus the detector, in ``<output_folder>/interface``, with its model card."""
    folder = os.path.join(detector_hparams["output_folder"], "interface")
    export_interface(
        checkpoint=checkpoint,
        label_encoder=classifier_hparams["label_encoder"],
        training_yaml=os.path.join(classifier_hparams["output_folder"], "hyperparams.yaml"),
        folder=folder,
        title=f"{classifier_hparams['experiment_name']} with a fake-data detector",
        detector={
            "yaml": os.path.join(detector_hparams["output_folder"], "hyperparams.yaml"),
            "checkpoint": detector_checkpoint.paramfiles["detector"],
            "threshold": threshold,
        },
    )
    classifier_card = os.path.join(classifier_hparams["output_folder"], "interface", "README.md")
    card = (
        open(classifier_card, encoding="utf-8").read()
        if os.path.isfile(classifier_card)
        else model_card(classifier_hparams)
    )
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(card + detector_card_section(report, detector_hparams["false_positive_rate"]))
    return folder


def main(argv=None):
    """Parses ``FOLDER DETECTOR_YAML [overrides]``; trains, tests and exports the detector."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{__doc__}")
        return None
    if len(argv) < 2 or argv[0].startswith("-") or argv[1].startswith("-"):
        sys.exit(f"{USAGE}\n\n{__doc__}")
    folder, yaml_file = argv[0], argv[1]
    _, run_opts, overrides = sb.parse_arguments([yaml_file, *argv[2:]])
    run_argv = run_options_only(run_opts, argv[2:])
    if run_opts["distributed_launch"]:
        sys.exit("ser-adv detector runs in one process: start it with python, not torchrun.")
    try:
        if not os.path.isfile(yaml_file):  # before the classifier's data are checked
            raise FileNotFoundError(f"{yaml_file}: no such detector yaml file.")
        classifier_hparams, datasets, _, checkpoint, classifier = frozen_classifier(folder, run_argv)
        overrides = detector_overrides(folder, classifier.model.embedding_dim, overrides)
        hparams = load_detector_hparams(yaml_file, overrides)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        sys.exit(f"detector: {error.args[0] if isinstance(error, KeyError) else error}")  # KeyError's str() quotes
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=yaml_file, overrides=overrides
    )
    brain = DetectorBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams={**hparams, "classifier": classifier},
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    classifier.to(brain.device)
    for attack in [hparams["attack"], *hparams["unseen_attacks"], hparams["adaptive_attack"]]:
        attack.set_class_names(classifier_hparams["label_encoder"])
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["dataloader_options"],
        valid_loader_kwargs=hparams["test_dataloader_options"],
    )
    return evaluate_and_export(brain, hparams, classifier_hparams, datasets, checkpoint)


def evaluate_and_export(brain, hparams, classifier_hparams, datasets, checkpoint):
    """Tests the best-dev-AUC detector, writes the report, exports the interface; returns the report's rows."""
    brain.on_evaluate_start(max_key="AUC")
    loader_kwargs = hparams["test_dataloader_options"]
    dev_real_scores = score_split(brain, datasets["valid"], [], loader_kwargs)[1]["real"][0]
    # The interface returns sigmoid(s): the threshold goes on the same scale (sigmoid is monotone).
    threshold = float(torch.sigmoid(torch.tensor(detection_threshold(dev_real_scores, hparams["false_positive_rate"]))))
    attacks = [hparams["attack"], *hparams["unseen_attacks"], hparams["adaptive_attack"]]
    targets, outcomes = score_split(brain, datasets["test"], attacks, loader_kwargs)
    n_classes = classifier_hparams["n_classes"]
    named = {name_of(attack, attacks): attack for attack in attacks}
    rows = detection_rows(
        targets, outcomes, named, name_of(hparams["attack"], attacks), hparams["false_positive_rate"], n_classes
    )
    real_uar = uar_of_correct(outcomes["real"][1] == targets, targets, n_classes)
    report = detection_markdown(rows, f"{classifier_hparams['experiment_name']}: fake-data detector", real_uar)
    write_detection_report(rows, report, hparams["output_folder"])
    detector_checkpoint = brain.checkpointer.find_checkpoint(max_key="AUC")
    export_with_detector(classifier_hparams, checkpoint, hparams, detector_checkpoint, threshold, report)
    logger.info(f"Fake-data detector:\n{report}")
    return rows


if __name__ == "__main__":
    main()
