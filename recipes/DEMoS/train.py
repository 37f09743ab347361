#!/usr/bin/env python3
"""Recipe: speech emotion recognition on DEMoS, with FGSM attacks and adversarial training.

Implements Ren et al., ICASSP 2020 (see the README): a CNN-4, VGG-16 or
ResNet-50 on log-Mel features, trained on real data only (``*_single``) or on
real data and their FGSM twins (``*_vanilla``, ``*_similarity``), then tested
on real and attacked data.

To run (without --data_folder it trains on a built-in SYNTHETIC DEMoS-shaped corpus):
    python train.py hparams/vgg16_vanilla.yaml --data_folder=/path/to/DEMoS

On several GPUs:
    torchrun --nproc_per_node=4 train.py hparams/vgg16_vanilla.yaml --data_folder=/path/to/DEMoS

The plug-ins (features, models, attacks, objectives, training steps) and the
Brain's machinery (DDP, checkpoints, evaluation under attack) are the
``ser_adv_brain`` package's; the yaml file chooses them.

Authors
 * ser_adv_brain contributors
"""

import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.logger import get_logger

from ser_adv_brain.data.synthetic import generate_synthetic_demos
from ser_adv_brain.objectives.base import classification_loss
from ser_adv_brain.runs import checked_datasets, export_checkpoint, report_attacks
from ser_adv_brain.training.brain import EmotionBrain
from ser_adv_brain.training.checkpoints import selection_key
from ser_adv_brain.training.distributed import set_collective_timeout

logger = get_logger(__name__)


class EmotionRecognitionBrain(EmotionBrain):
    """Classifies an utterance's emotion from its log-Mel features; trains as ``training_step`` says."""

    def compute_forward(self, batch, stage):
        """Waveforms -> log-Mel -> z-scored features -> the model's logits and embedding."""
        batch = batch.to(self.device)
        if stage == sb.Stage.TRAIN:
            if hasattr(self.hparams, "wav_augment"):  # in place: the loss reads the augmented batch too
                self.augment_batch(batch, self.hparams.wav_augment)
            return self.training_step.forward(self, batch)  # clean, or with the attack's fake twin
        feats = self.modules.compute_features(batch.sig.data)
        feats = self.modules.normalizer(feats)
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

    from demos_prepare import prepare_demos  # noqa: E402 (beside this script)

    # Data preparation, on the main process only; the model card describes the corpus.
    data_folder = hparams["data_folder"]
    corpus = None if hparams["skip_prep"] else "DEMoS"
    if data_folder is None and not hparams["skip_prep"]:
        corpus = "synthetic"
        data_folder = os.path.join(hparams["output_folder"], "synthetic_demos")
        logger.info(f"No --data_folder given: training on the built-in SYNTHETIC corpus in {data_folder}")
        run_on_main(generate_synthetic_demos, kwargs={"folder": data_folder, **hparams["synthetic_corpus"]})
    if not hparams["skip_prep"]:
        run_on_main(
            prepare_demos,
            kwargs={
                "data_folder": data_folder,
                "save_folder": hparams["output_folder"],
                "split_ratio": hparams["split_ratio"],
                "seed": hparams["seed"],
                "split_file": hparams["split_file"],
                "prototypical_only": hparams["prototypical_only"],
                "skip_bad_files": hparams["skip_bad_files"],
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
    export_checkpoint(brain, hparams, max_key, corpus)
    if torch.distributed.is_initialized():
        # An undestroyed gloo group can abort the process at interpreter exit.
        torch.distributed.destroy_process_group()
