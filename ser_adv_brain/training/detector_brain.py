"""The Brain that trains a fake-data detector on a frozen classifier's embeddings of real and fake batches."""

import speechbrain as sb
import torch
import torch.nn.functional as F

from ser_adv_brain.attacks.detector_aware_pgd import DetectorAwarePGD
from ser_adv_brain.detectors import DetectedClassifier
from ser_adv_brain.metrics import roc_auc


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
            target = (
                DetectedClassifier(classifier.model, self.modules.detector)
                if isinstance(attack, DetectorAwarePGD)
                else classifier.model
            )
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
            stats_meta={"epoch": epoch},
            train_stats={"loss": self.train_loss},
            valid_stats={"loss": stage_loss, "AUC": auc},
        )


def split_real_fake(score_batches):
    """``compute_objectives``'s batches of ``[real, fake]`` scores -> all real scores, all fake scores."""
    real = [scores[: len(scores) // 2] for scores in score_batches]
    fake = [scores[len(scores) // 2 :] for scores in score_batches]
    return torch.cat(real), torch.cat(fake)
