"""Trains a fake-data detector on a trained output folder, tests it, and exports it with the interface.

Usage (detector yaml keys and run options can follow, as for train.py):
    python -m ser_adv_brain.train_detector results/cnn4_vanilla/1234 hparams/detector.yaml
    python -m ser_adv_brain.train_detector results/cnn4_vanilla/1234 hparams/detector.yaml \
        --number_of_epochs=5 --output_folder=results/cnn4_vanilla/1234/detector_pgd \
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
  ``ser_adv_brain.inference``); its threshold is set on real dev data.
"""

import csv
import logging
import os
import sys

import speechbrain as sb
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.attack_suite import attack_label, budget_text, uar_of_correct
from ser_adv_brain.attacks.base import Attack
from ser_adv_brain.attacks.detector_aware_pgd import DetectedClassifier, DetectorAwarePGD
from ser_adv_brain.attacks.waveform_pgd import WaveformClassifier
from ser_adv_brain.inference import export_interface
from ser_adv_brain.metrics import detection_threshold, roc_auc, tpr_at_fpr
from ser_adv_brain.model_card import detector_card_section, model_card
from ser_adv_brain.recipe import load_trained, selection_key

logger = logging.getLogger(__name__)

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
REPORT_CSV, REPORT_MD = "detection.csv", "detection.md"
CSV_FIELDS = ["attack", "budget", "seen_in_training", "AUC", "TPR_at_FPR", "false_positive_rate", "UAR_under_attack",
              "UAR_flagged_counted_correct", "n"]  # fmt: skip


def detector_overrides(classifier_folder, embedding_dim, overrides=""):
    """The command line's yaml overrides, plus the two keys the command fills in from the classifier."""
    return f"{overrides or ''}\nclassifier_folder: {os.path.abspath(classifier_folder)}\nembedding_dim: {embedding_dim}\n"


def load_detector_hparams(yaml_file, overrides):
    """The detector yaml with its overrides (see ``detector_overrides``), checked key by key; errors name the file and the key."""
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


class DetectorBrain(sb.Brain):
    """Trains ``modules.detector`` on the frozen classifier's embeddings of real and fake batches.

    Expected hparams: ``classifier`` (a ``WaveformClassifier`` in eval mode,
    not among the modules, so that no stage ever changes its mode or weights),
    ``attack``, ``epoch_counter``, ``train_logger``.
    """

    def embeddings(self, attack, wavs, feats, targets):
        """The classifier's embedding and logits of the attack's fakes of a batch (and of the real batch if None)."""
        classifier = self.hparams.classifier
        if attack is not None and attack.domain == "waveform":
            feats = classifier.normalizer(classifier.compute_features(attack.perturb(classifier, wavs, targets)))
        elif attack is not None:
            target = DetectedClassifier(classifier.model, self.modules.detector) if isinstance(attack, DetectorAwarePGD) else classifier.model
            feats = attack.perturb(target, feats, targets)
        with torch.no_grad():
            logits, embedding = classifier.model(feats.detach())
        return embedding, logits

    def real_batch(self, batch):
        batch = batch.to(self.device)
        wavs, targets = batch.sig.data, batch.emo_encoded.data.view(-1)
        with torch.no_grad():
            feats = self.hparams.classifier.normalizer(self.hparams.classifier.compute_features(wavs))
        return wavs, feats, targets

    def compute_forward(self, batch, stage):
        """The detector's logits on the real batch, then on its fakes: ``[2 * batch]``."""
        wavs, feats, targets = self.real_batch(batch)
        real, _ = self.embeddings(None, wavs, feats, targets)
        fake, _ = self.embeddings(self.hparams.attack, wavs, feats, targets)
        return self.modules.detector(torch.cat([real, fake]))

    def compute_objectives(self, predictions, batch, stage):
        """Binary cross-entropy, real = 0, fake = 1; outside training, keeps the scores for the AUC."""
        half = len(predictions) // 2
        labels = torch.cat([torch.zeros(half), torch.ones(half)]).to(predictions.device)
        if stage != sb.Stage.TRAIN:
            self.scores.append(predictions.detach().cpu())
        return F.binary_cross_entropy_with_logits(predictions, labels)

    def on_stage_start(self, stage, epoch=None):
        self.scores = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch; keeps the checkpoint with the best dev AUC."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        auc = roc_auc(*split_real_fake(self.scores))
        self.checkpointer.save_and_keep_only(meta={"AUC": auc}, max_keys=["AUC"])
        self.hparams.train_logger.log_stats(
            stats_meta={"epoch": epoch}, train_stats={"loss": self.train_loss}, valid_stats={"loss": stage_loss, "AUC": auc}
        )

    def score_split(self, dataset, attacks, loader_kwargs):
        """Detector scores and classifier predictions on real data and under each attack, every utterance.

        Returns
        -------
        targets : torch.Tensor
        outcomes : dict
            ``"real"`` and each attack's name -> ``(detector logits, predicted classes)``.
        """
        loader = self.make_dataloader(dataset, sb.Stage.TEST, ckpt_prefix=None, **loader_kwargs)
        self.modules.eval()
        named = {name_of(attack, attacks): attack for attack in [None, *attacks]}
        for attack in named.values():
            if hasattr(attack, "generator"):  # the same evaluation twice gives the same result
                attack.generator.manual_seed(attack.seed)
        parts = {name: ([], []) for name in named}
        targets = []
        for batch in loader:
            wavs, feats, batch_targets = self.real_batch(batch)
            targets.append(batch_targets.cpu())
            for name, attack in named.items():
                embedding, logits = self.embeddings(attack, wavs, feats, batch_targets)
                with torch.no_grad():
                    parts[name][0].append(self.modules.detector(embedding).cpu())
                parts[name][1].append(logits.argmax(dim=-1).cpu())
        return torch.cat(targets), {name: (torch.cat(scores), torch.cat(preds)) for name, (scores, preds) in parts.items()}


def split_real_fake(score_batches):
    """``compute_objectives``'s batches of ``[real, fake]`` scores -> all real scores, all fake scores."""
    real = [scores[: len(scores) // 2] for scores in score_batches]
    fake = [scores[len(scores) // 2 :] for scores in score_batches]
    return torch.cat(real), torch.cat(fake)


def name_of(attack, attacks):
    """The report's name of an attack (``"real"`` for None); repeated classes are numbered."""
    if attack is None:
        return "real"
    name = attack_label(attack) + (" (adaptive)" if isinstance(attack, DetectorAwarePGD) else "")
    same = [a for a in attacks if attack_label(a) == attack_label(attack)]
    return name if len(same) == 1 else f"{name} ({same.index(attack) + 1})"


def detection_rows(targets, outcomes, attacks, trained_on, false_positive_rate, n_classes):
    """One row per attack: AUC, TPR at the rate, UAR under attack, UAR with flagged fakes counted correct.

    ``targets`` and ``outcomes``: see ``DetectorBrain.score_split``; ``attacks``: name -> attack.
    """
    real_scores, _ = outcomes["real"]
    threshold = detection_threshold(real_scores, false_positive_rate)
    rows = []
    for name, (scores, predictions) in outcomes.items():
        if name == "real":
            continue
        rows.append({
            "attack": name,
            "budget": budget_text(f"{attacks[name].domain}_{attacks[name].norm}", attacks[name].eps),
            "seen_in_training": name == trained_on,
            "AUC": roc_auc(real_scores, scores),
            "TPR_at_FPR": tpr_at_fpr(real_scores, scores, false_positive_rate),
            "false_positive_rate": false_positive_rate,
            "UAR_under_attack": uar_of_correct(predictions == targets, targets, n_classes),
            "UAR_flagged_counted_correct": uar_of_correct((predictions == targets) | (scores > threshold), targets, n_classes),
            "n": len(targets),
        })  # fmt: skip
    return rows


def detection_markdown(rows, title, real_uar):
    """The detection table, with what each column means."""
    rate = rows[0]["false_positive_rate"]
    lines = [
        f"### {title}",
        "",
        f"Test split, {rows[0]['n']} utterances, every attack on every utterance. AUC: real utterances "
        f"against their fakes. TPR: fakes flagged at the threshold that flags {rate:.0%} of real utterances. "
        f"UAR under attack: the classifier alone (real data: {real_uar:.3f}). Flagged counted correct: a fake "
        "the detector flags counts as handled.",
        "",
        f"| attack | budget | seen in training | AUC | TPR at {rate:.0%} FPR | UAR under attack | UAR, flagged counted correct |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['attack']} | {r['budget']} | {'yes' if r['seen_in_training'] else 'no'} | {r['AUC']:.3f} | {r['TPR_at_FPR']:.3f} | "
        f"{r['UAR_under_attack']:.3f} | {r['UAR_flagged_counted_correct']:.3f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def write_detection_report(rows, markdown, folder):
    with open(os.path.join(folder, REPORT_CSV), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(folder, REPORT_MD), "w", encoding="utf-8") as f:
        f.write(markdown)


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
    card = open(classifier_card, encoding="utf-8").read() if os.path.isfile(classifier_card) else model_card(classifier_hparams)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(card + detector_card_section(report, detector_hparams["false_positive_rate"]))
    return folder


def main(argv=None):
    """Parses ``FOLDER DETECTOR_YAML [overrides]``; trains, tests and exports the detector."""
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0].startswith("-") or argv[1].startswith("-"):
        sys.exit(__doc__)
    folder, yaml_file = argv[0], argv[1]
    _, run_opts, overrides = sb.parse_arguments([yaml_file, *argv[2:]])
    run_argv = run_options_only(run_opts, argv[2:])
    if run_opts["distributed_launch"]:
        sys.exit("train_detector runs in one process: start it with python, not torchrun.")
    try:
        if not os.path.isfile(yaml_file):  # before the classifier's data are checked
            raise FileNotFoundError(f"{yaml_file}: no such detector yaml file.")
        classifier_hparams, datasets, _, checkpoint, classifier = frozen_classifier(folder, run_argv)
        overrides = detector_overrides(folder, classifier.model.embedding_dim, overrides)
        hparams = load_detector_hparams(yaml_file, overrides)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        sys.exit(f"train_detector: {error.args[0] if isinstance(error, KeyError) else error}")  # KeyError's str() quotes
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
    dev_real_scores = brain.score_split(datasets["valid"], [], loader_kwargs)[1]["real"][0]
    # The interface returns sigmoid(s): the threshold goes on the same scale (sigmoid is monotone).
    threshold = float(torch.sigmoid(torch.tensor(detection_threshold(dev_real_scores, hparams["false_positive_rate"]))))
    attacks = [hparams["attack"], *hparams["unseen_attacks"], hparams["adaptive_attack"]]
    targets, outcomes = brain.score_split(datasets["test"], attacks, loader_kwargs)
    n_classes = classifier_hparams["n_classes"]
    named = {name_of(attack, attacks): attack for attack in attacks}
    rows = detection_rows(targets, outcomes, named, name_of(hparams["attack"], attacks), hparams["false_positive_rate"], n_classes)
    real_uar = uar_of_correct(outcomes["real"][1] == targets, targets, n_classes)
    report = detection_markdown(rows, f"{classifier_hparams['experiment_name']}: fake-data detector", real_uar)
    write_detection_report(rows, report, hparams["output_folder"])
    detector_checkpoint = brain.checkpointer.find_checkpoint(max_key="AUC")
    export_with_detector(classifier_hparams, checkpoint, hparams, detector_checkpoint, threshold, report)
    logger.info(f"Fake-data detector:\n{report}")
    return rows


if __name__ == "__main__":
    main()
