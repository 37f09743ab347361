"""Detection evaluation: the detector's scores and the classifier's predictions under every attack, per utterance,
and the detection metrics of each attack (ROC AUC, TPR at a false-positive rate, UAR with flagged fakes handled)."""

import speechbrain as sb
import torch

from ser_adv_brain.evaluation.suite import budget_text
from ser_adv_brain.metrics import detection_threshold, roc_auc, tpr_at_fpr, uar_of_correct


def score_split(brain, dataset, attacks, loader_kwargs):
    """Detector scores and classifier predictions on real data and under each attack, every utterance.

    Returns
    -------
    targets : torch.Tensor
    outcomes : dict
        ``"real"`` and each attack's name -> ``(detector logits, predicted classes)``.
    """
    loader = brain.make_dataloader(dataset, sb.Stage.TEST, ckpt_prefix=None, **loader_kwargs)
    brain.modules.eval()
    named = {name_of(attack, attacks): attack for attack in [None, *attacks]}
    for attack in named.values():
        if attack is not None and attack.generator is not None:  # the same evaluation twice gives the same result
            attack.generator.manual_seed(attack.seed)
    parts = {name: ([], []) for name in named}
    targets = []
    for batch in loader:
        wavs, feats, batch_targets = brain.real_batch(batch)
        targets.append(batch_targets.cpu())
        for name, attack in named.items():
            embedding, logits = brain.embeddings(attack, wavs, feats, batch_targets)
            with torch.no_grad():
                parts[name][0].append(brain.modules.detector(embedding).cpu())
            parts[name][1].append(logits.argmax(dim=-1).cpu())
    return torch.cat(targets), {name: (torch.cat(scores), torch.cat(preds)) for name, (scores, preds) in parts.items()}


def name_of(attack, attacks):
    """The report's name of an attack (``"real"`` for None); repeated classes are numbered."""
    if attack is None:
        return "real"
    name = attack.name
    same = [a for a in attacks if a.name == attack.name]
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
        rows.append(
            {
                "attack": name,
                "budget": budget_text(f"{attacks[name].domain}_{attacks[name].norm}", attacks[name].eps),
                "seen_in_training": name == trained_on,
                "AUC": roc_auc(real_scores, scores),
                "TPR_at_FPR": tpr_at_fpr(real_scores, scores, false_positive_rate),
                "false_positive_rate": false_positive_rate,
                "UAR_under_attack": uar_of_correct(predictions == targets, targets, n_classes),
                "UAR_flagged_counted_correct": uar_of_correct(
                    (predictions == targets) | (scores > threshold), targets, n_classes
                ),
                "n": len(targets),
            }
        )
    return rows
