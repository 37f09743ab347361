#!/usr/bin/env python3
"""Recipe: speech emotion recognition on EmoDB, with FGSM attacks and adversarial training.

Implements Ren et al., ICASSP 2020 (see the README) on real German speech
(Burkhardt et al., Interspeech 2005): a CNN-4 on log-Mel features, trained on
real data only (``cnn4_single``) or on real data and their FGSM twins
(``cnn4_vanilla``, ``cnn4_similarity``), then tested on real and attacked data.
The same script trains self-supervised encoders (wav2vec 2.0, HuBERT, WavLM)
with a pooled linear head on the waveform (``wav2vec2_single``, ...), attacked
and adversarially trained on the waveform only (``wav2vec2_vanilla``, ...);
``cnn4_smoothing_*`` train the base classifier of randomised smoothing (Cohen
et al., ICML 2019) and end with its certificates.

To run:
    python train.py hparams/cnn4_vanilla.yaml --data_folder=/path/to/emodb/wav
    python train.py hparams/wav2vec2_single.yaml --data_folder=/path/to/emodb/wav

The plug-ins (features, models, attacks, objectives, training steps) and the
Brain's machinery (DDP, checkpoints, evaluation under attack) are the
``ser_adv_brain`` package's; the yaml file chooses them.

Authors
 * ser_adv_brain contributors
"""

import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from ser_adv_brain.objectives.base import classification_loss
from ser_adv_brain.runs import checked_datasets, export_checkpoint, report_attacks, report_certificates
from ser_adv_brain.training.brain import EmotionBrain
from ser_adv_brain.training.checkpoints import selection_key
from ser_adv_brain.training.distributed import set_collective_timeout


class EmotionRecognitionBrain(EmotionBrain):
    """Classifies an utterance's emotion from its log-Mel features (or waveform); trains as ``training_step`` says."""

    def compute_forward(self, batch, stage):
        """Waveforms -> log-Mel -> z-scored features (or the waveforms, for a self-supervised model) -> the
        model's logits and embedding."""
        batch = batch.to(self.device)
        if stage == sb.Stage.TRAIN:
            if hasattr(self.hparams, "wav_augment"):  # in place: the loss reads the augmented batch too
                self.augment_batch(batch, self.hparams.wav_augment)
            return self.training_step.forward(self, batch)  # clean, or with the attack's fake twin
        feats = self.compute_features(batch.sig.data)  # EmotionBrain.compute_features: the model's input
        # The bare model, not DDP's wrapper: DDP would wait on ranks with fewer evaluation batches.
        logits, embedding = self.model(feats)
        return {"feats": feats, "logits": logits, "embedding": embedding}

    def compute_objectives(self, predictions, batch, stage):
        """Training: the training step's loss. Evaluation: the NLL, and predictions counted for UAR."""
        if stage == sb.Stage.TRAIN:
            return self.training_loss(predictions, batch)
        targets = self.targets(batch)
        loss = classification_loss(predictions["logits"], targets)
        self.record_predictions(predictions["logits"], targets, loss)
        return loss

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the stage's loss, UAR and accuracy (after validation, once the best checkpoint is kept)."""
        stats = super().on_stage_end(stage, stage_loss, epoch)
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr}, train_stats=self.train_stats, valid_stats=stats
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    from emodb_prepare import prepare_emodb  # noqa: E402 (beside this script)

    # Data preparation, on the main process only; the model card describes the corpus.
    corpus = None if hparams["skip_prep"] else "EmoDB"
    if not hparams["skip_prep"]:
        run_on_main(
            prepare_emodb,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["output_folder"],
                "split_ratio": hparams["split_ratio"],
                "seed": hparams["seed"],
                "split_file": hparams["split_file"],
                "test_speakers": hparams["test_speakers"],
                "valid_speakers": hparams["valid_speakers"],
                "fold": hparams["fold"],
                "n_folds": hparams["n_folds"],
            },
        )

    # Every manifest row, audio file and hyperparameter is checked before any training.
    manifests = {
        "train": hparams["train_annotation"],
        "valid": hparams["valid_annotation"],
        "test": hparams["test_annotation"],
    }
    datasets = checked_datasets(hparams, manifests, hparams["n_frames"])
    max_key = selection_key(hparams["select_checkpoint"])  # the checkpoint tested and exported
    set_collective_timeout(hparams["ddp_timeout_minutes"])  # after the checks, which other processes wait for

    brain = EmotionRecognitionBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        training_step=hparams["training_step"],
        sync_batchnorm=hparams["sync_batchnorm"],
    )
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

    # UAR under the paper's FGSM and under the attack suite (dev and test), then the exported interface.
    report_attacks(
        brain,
        hparams,
        datasets,
        max_key,
        attack=hparams["attack"],
        eval_eps=hparams["eval_eps"],
        attack_suite=hparams["attack_suite"],
        suite_budgets=hparams["suite_budgets"],
        suite_early_exit=hparams["suite_early_exit"],
        masking_check_eps=hparams["masking_check_eps"],
    )
    # Randomised smoothing (cnn4_smoothing_*.yaml): the smoothed classifier's certificates on the test split.
    if hparams.get("smoothing") is not None:
        report_certificates(brain, hparams, datasets, max_key, hparams["smoothing"], splits=("test",))
    export_checkpoint(brain, hparams, max_key, corpus)
    if torch.distributed.is_initialized():
        # An undestroyed gloo group can abort the process at interpreter exit.
        torch.distributed.destroy_process_group()
