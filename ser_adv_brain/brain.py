"""SpeechBrain ``Brain`` subclasses: clean (single) training and adversarial training.

``EmotionBrain`` trains on real data only and evaluates UAR, on real data and
on an attack's fake data over a grid of budgets. ``AdversarialEmotionBrain``
builds an FGSM fake batch inside ``compute_objectives`` and trains on the
yaml-chosen objective (vanilla or similarity-based).
"""

import logging

import speechbrain as sb
import torch

from ser_adv_brain.attacks.base import GradientAttack
from ser_adv_brain.metrics import ConfusionMatrix
from ser_adv_brain.objectives.base import AdversarialObjective, classification_loss

logger = logging.getLogger(__name__)


def broadcast_buffers(module):
    """Copies rank 0's buffers (BN statistics, normaliser) to every DDP rank."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


class EmotionBrain(sb.Brain):
    """Clean training of an emotion classifier on z-scored log-Mel features.

    Expected ``modules``: ``normalizer`` (``FeatureNormalizer``) and ``model``
    (returns ``(logits, embedding)``). Expected hparams: ``compute_features``,
    ``n_classes``, ``attack`` (used for robustness evaluation),
    ``train_logger``; ``label_encoder`` is added by the recipe.
    """

    @property
    def model(self):
        """The model without its DDP wrapper: for passes that must not touch DDP's reducer."""
        model = self.modules.model
        return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model

    def compute_features(self, wavs):
        """Waveforms ``[batch, time]`` -> normalised log-Mel ``[batch, frames, n_mels]``."""
        return self.modules.normalizer(self.hparams.compute_features(wavs))

    def compute_forward(self, batch, stage):
        """Features, then the model; the features are returned for the attacks.

        Only training goes through DDP. An evaluation forward through DDP
        would broadcast the buffers, a collective that a rank with fewer (or
        no) batches of its evaluation shard would never join.
        """
        batch = batch.to(self.device)
        feats = self.compute_features(batch.sig.data)
        model = self.modules.model if stage == sb.Stage.TRAIN else self.model
        logits, embedding = model(feats)
        return {"feats": feats, "logits": logits, "embedding": embedding}

    def targets(self, batch):
        return batch.emo_encoded.data.view(-1).to(self.device)

    def compute_objectives(self, predictions, batch, stage):
        """Negative log-likelihood; outside training, also counts predictions for UAR."""
        targets = self.targets(batch)
        loss = classification_loss(predictions["logits"], targets)
        if stage != sb.Stage.TRAIN:
            self.confusion.append(predictions["logits"].argmax(dim=-1), targets)
            self.loss_sum += float(loss) * len(targets)
        return loss

    def on_stage_start(self, stage, epoch=None):
        if stage != sb.Stage.TRAIN:
            broadcast_buffers(self.modules)
            self.confusion = ConfusionMatrix(self.hparams.n_classes)
            self.loss_sum = 0.0

    def eval_stats(self, stage_loss):
        """Loss, UAR and accuracy of the finished evaluation stage, summed over DDP ranks."""
        self.confusion.all_reduce(self.device)
        total = torch.tensor([self.loss_sum], dtype=torch.float64, device=self.device)
        sb.utils.distributed.ddp_all_reduce(total, torch.distributed.ReduceOp.SUM)
        count = int(self.confusion.counts.sum())
        loss = float(total) / count if count else stage_loss
        return {"loss": loss, "UAR": self.confusion.uar(), "accuracy": self.confusion.accuracy()}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch, keeps the checkpoint with the best dev UAR."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, **self.train_loss_parts()}
            return
        stats = self.eval_stats(stage_loss)
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"UAR": stats["UAR"]}, max_keys=["UAR"])
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )

    def train_loss_parts(self):
        """Extra training statistics to log (the adversarial Brain adds the loss parts)."""
        return {}

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """In DDP, evaluation data are sharded without padding, so every example counts once."""
        if (
            stage != sb.Stage.TRAIN
            and self.distributed_launch
            and "sampler" not in loader_kwargs
            and not isinstance(dataset, torch.utils.data.DataLoader)
        ):
            world = torch.distributed.get_world_size()
            loader_kwargs["sampler"] = range(self.rank, len(dataset), world)
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def _wrap_distributed(self):
        """DDP-wraps the trainable modules; SyncBatchNorm only when asked and on GPU.

        SpeechBrain converts every BatchNorm to SyncBatchNorm, which fails on
        CPU (gloo) and changes the paper's per-batch statistics. Here each
        process normalises its own batch unless ``sync_batchnorm: True``.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        sync_bn = getattr(self.hparams, "sync_batchnorm", False) and self.device_type == "cuda"
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                if sync_bn:
                    module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
                self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                    module,
                    device_ids=[self.device] if self.device_type == "cuda" else None,
                    find_unused_parameters=self.find_unused_parameters,
                )

    def fit_normalizer(self, train_set, loader_kwargs):
        """Estimates the per-Mel-bin statistics on the training set, unless a checkpoint has them."""
        if self.checkpointer is not None and self.checkpointer.find_checkpoint() is not None:
            logger.info("Resuming: feature statistics come with the checkpoint.")
            return
        loader = sb.dataio.dataloader.make_dataloader(train_set, **loader_kwargs)
        with torch.no_grad():
            self.modules.normalizer.fit(
                self.hparams.compute_features(batch.sig.data.to(self.device)) for batch in loader
            )
        broadcast_buffers(self.modules.normalizer)

    def attack_loss_scale(self):
        """Loss scale for attack gradients: fp16 gradients underflow, and a zero has no sign."""
        return self.scaler.get_scale() if self.scaler.is_enabled() else 1.0

    def evaluate_robustness(self, dataset, eps_grid, max_key="UAR", loader_kwargs=None):
        """UAR on real data (eps = 0) and on the attack's fake data for each eps.

        The attack in ``hparams.attack`` is run against the best checkpoint;
        FGSM computes one input gradient per batch for the whole grid.

        Returns
        -------
        dict
            eps -> ``ConfusionMatrix`` (summed over DDP ranks).
        """
        self.on_evaluate_start(max_key=max_key)
        self.modules.eval()
        broadcast_buffers(self.modules)
        loader_kwargs = {**(loader_kwargs or {}), "ckpt_prefix": None}  # no resumable test loader
        loader = self.make_dataloader(dataset, sb.Stage.TEST, **loader_kwargs)
        confusions = {eps: ConfusionMatrix(self.hparams.n_classes) for eps in eps_grid}
        loss_scale = 1024.0 if self.eval_precision == "fp16" else 1.0
        for batch in loader:
            batch = batch.to(self.device)
            targets = self.targets(batch)
            with self.evaluation_ctx:
                feats = self.compute_features(batch.sig.data)
                for eps, fake in self.hparams.attack.curve(self.model, feats, targets, eps_grid, loss_scale):
                    with torch.no_grad():
                        logits, _ = self.model(fake)
                    confusions[eps].append(logits.argmax(dim=-1), targets)
        for confusion in confusions.values():
            confusion.all_reduce(self.device)
        return confusions


class AdversarialEmotionBrain(EmotionBrain):
    """Adversarial training: each step trains on a real batch and its FGSM fake twin.

    Expected hparams, beyond ``EmotionBrain``'s: ``attack`` (a
    ``GradientAttack``), ``objective`` (an ``AdversarialObjective``) and
    ``warmup_steps`` (optimiser steps of clean training before the
    adversarial terms start; 1000 iterations in the authors' code).

    A step costs what its options require, no more:

    - target labels, train-mode attack, and an objective whose real branch
      gets no gradient but ``w * L(x)`` (vanilla; similarity with a detached
      real embedding): one backward of ``w * L(x)`` yields the parameter
      gradients *and* the input gradient for FGSM. Then the fake forward and
      its backward: two forwards, two backwards, the floor.
    - train-mode attack otherwise: the input gradient is taken from the
      training forward (an input-only backward), then one backward of the
      whole objective.
    - eval-mode attack (the authors'): a separate eval-mode forward and
      input-only backward, then as above.

    Under DDP, every pass but the fake forward uses the unwrapped model, so the
    reducer sees one forward and all-reduces once per step.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.hparams.attack, GradientAttack):
            raise TypeError(f"hparams 'attack' must be a GradientAttack, got {self.hparams.attack!r}")
        if not isinstance(self.hparams.objective, AdversarialObjective):
            raise TypeError(f"hparams 'objective' must be an AdversarialObjective, got {self.hparams.objective!r}")
        if not int(self.hparams.warmup_steps) >= 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.hparams.warmup_steps!r}")
        self.parts_sum, self.parts_count = {}, 0

    @property
    def adversarial_step(self):
        """False during the clean warm-up."""
        return self.optimizer_step >= self.hparams.warmup_steps

    @property
    def fused_step(self):
        """Whether one backward can give both the real term's parameter gradients and the attack's input gradient."""
        attack, objective = self.hparams.attack, self.hparams.objective
        return (
            attack.model_mode == "train"
            and attack.label_source == "target"
            and objective.real_weight > 0
            and not objective.couples_real_branch
        )

    def compute_forward(self, batch, stage):
        """The real forward; in adversarial steps it runs outside DDP (see the class docstring)."""
        if stage != sb.Stage.TRAIN or not self.adversarial_step:
            return super().compute_forward(batch, stage)
        batch = batch.to(self.device)
        feats = self.compute_features(batch.sig.data).detach()
        feats.requires_grad_(self.hparams.attack.model_mode == "train")
        logits, embedding = self.model(feats)
        return {"feats": feats, "logits": logits, "embedding": embedding}

    def compute_objectives(self, predictions, batch, stage):
        """The objective on the real batch and its FGSM twin (clean loss in warm-up and evaluation)."""
        if stage != sb.Stage.TRAIN or not self.adversarial_step:
            return super().compute_objectives(predictions, batch, stage)
        attack, objective = self.hparams.attack, self.hparams.objective
        targets = self.targets(batch)
        feats = predictions["feats"]
        real = (predictions["logits"], predictions["embedding"])
        if self.fused_step:
            real_term = objective.real_weight * classification_loss(real[0], targets)
            self.scaler.scale(real_term / self.grad_accumulation_factor).backward()
            gradient = feats.grad
            real = (real[0].detach(), real[1].detach())  # its gradients are already in .grad
        elif attack.model_mode == "train":
            labels = attack.labels(real[0], targets)
            gradient = attack.gradient_from_logits(
                real[0], feats, labels, self.attack_loss_scale(), retain_graph=True
            )
        else:
            gradient, _ = attack.input_gradient(self.model, feats, targets, loss_scale=self.attack_loss_scale())
        fake_feats = attack.perturb(self.model, feats.detach(), targets, gradient=gradient)
        fake = self.modules.model(fake_feats)
        parts = objective(real, fake, targets)
        self.accumulate_parts(parts)
        return parts["loss"]

    def accumulate_parts(self, parts):
        for name, value in parts.items():
            if name != "loss":
                self.parts_sum[name] = self.parts_sum.get(name, 0.0) + float(value.detach())
        self.parts_count += 1

    def train_loss_parts(self):
        """Epoch means of the real loss, the fake loss and the distance."""
        means = {name: total / self.parts_count for name, total in self.parts_sum.items()}
        self.parts_sum, self.parts_count = {}, 0
        return means
