"""SpeechBrain ``Brain`` subclasses: clean (single) training and adversarial training.

``EmotionBrain`` trains on real data only and evaluates UAR, on real data and
on an attack's fake data over a grid of budgets. ``AdversarialEmotionBrain``
builds a fake batch (FGSM in the paper; any ``GradientAttack``, PGD included)
inside ``compute_objectives`` and trains on the
yaml-chosen objective (vanilla or similarity-based).
"""

import functools
import gc
import logging

import speechbrain as sb
import torch

from ser_adv_brain.attacks.base import GradientAttack
from ser_adv_brain.distributed import out_of_step_errors
from ser_adv_brain.metrics import ConfusionMatrix, RunningMeans
from ser_adv_brain.objectives.base import AdversarialObjective, classification_loss

logger = logging.getLogger(__name__)


def broadcast_buffers(module):
    """Copies rank 0's buffers (BN statistics, normaliser) to every DDP rank."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


def naming_position(method):
    """Under DDP, a collective that fails inside ``method`` raises an error naming the Brain's ``position``."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with out_of_step_errors(lambda: self.position):
            return method(self, *args, **kwargs)

    return wrapped


class EmotionBrain(sb.Brain):
    """Clean training of an emotion classifier on z-scored log-Mel features.

    Expected ``modules``: ``compute_features`` (``LogMel``), ``normalizer``
    (``FeatureNormalizer``) and ``model`` (returns ``(logits, embedding)``);
    as modules they follow the Brain to its device. Expected hparams:
    ``n_classes``, ``attack`` (used for robustness evaluation),
    ``train_logger``; ``label_encoder`` is added by the recipe.

    ``position`` says where the Brain is (stage, epoch, batch); under DDP a
    collective that fails or times out raises a ``ProcessesOutOfStepError``
    that names it.
    """

    position = "the start"
    stage_name = "TRAIN stage"  # until a stage starts (fit_batch called on its own)

    @property
    def model(self):
        """The model without its DDP wrapper: for passes that must not touch DDP's reducer."""
        model = self.modules.model
        return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model

    def compute_features(self, wavs):
        """Waveforms ``[batch, time]`` -> normalised log-Mel ``[batch, frames, n_mels]``."""
        return self.modules.normalizer(self.modules.compute_features(wavs))

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

    @naming_position
    def fit(self, *args, **kwargs):
        try:
            return super().fit(*args, **kwargs)
        finally:
            self._unwrap_distributed()

    @naming_position
    def evaluate(self, *args, **kwargs):
        return super().evaluate(*args, **kwargs)

    def on_stage_start(self, stage, epoch=None):
        self.stage_name = f"{stage.name} stage" + (f" of epoch {epoch}" if epoch is not None else "")
        self.position = f"the start of the {self.stage_name}"
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
        self.position = f"the end of the {self.stage_name} (statistics, logs, checkpoint)"
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, **self.train_loss_parts()}
            return
        stats = self.eval_stats(stage_loss)
        if stage == sb.Stage.VALID:
            # Checkpoint first: a run killed while saving redoes this validation when resumed,
            # and must not find the epoch already logged.
            self.checkpointer.save_and_keep_only(meta={"UAR": stats["UAR"]}, max_keys=["UAR"])
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )

    def train_loss_parts(self):
        """Extra training statistics to log (the adversarial Brain adds the loss parts)."""
        return {}

    def on_fit_batch_start(self, batch, should_step):
        self.batch_ids = batch.id  # named if the batch's loss is not finite
        self.position = f"batch {self.step} of the {self.stage_name} (after {self.optimizer_step} optimizer steps)"

    def _save_intra_epoch_ckpt(self):
        """SpeechBrain's interval checkpoint, named in errors as a position of its own."""
        self.position = f"the intra-epoch checkpoint after batch {self.step} of the {self.stage_name}"
        super()._save_intra_epoch_ckpt()

    def check_loss_isfinite(self, loss):
        """Stops the run at the first non-finite training loss, naming the batch.

        It stops before the optimiser step, so the NaN reaches neither the
        parameters nor a checkpoint: the last checkpoint on disk stays good.
        SpeechBrain's ``nonfinite_patience`` is not used: the tolerated steps
        would still be applied, and a NaN in fp32 weights or batch-norm
        statistics never goes away.
        """
        if torch.isfinite(loss):
            return
        raise FloatingPointError(
            f"The training loss is {float(loss.detach())} at epoch {self.hparams.epoch_counter.current}, "
            f"step {self.step}, on the batch of utterances {list(self.batch_ids)}. Training stopped; "
            f"the checkpoints in {self.checkpointer.checkpoints_dir if self.checkpointer else '(none)'} "
            "are from before this batch. Check these utterances' audio (or, if the loss diverged, lower "
            "lr or leave fp16), then run the same command to resume from the last checkpoint."
        )

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """In DDP, evaluation data are sharded without padding, so every example counts once.

        The training loader gets its own random generator: a DataLoader
        without one draws its workers' seed from torch's global generator at
        the start of every epoch, and after a resume from an intra-epoch
        checkpoint that extra draw would shift every later random crop.
        """
        if stage == sb.Stage.TRAIN and "generator" not in loader_kwargs:
            loader_kwargs["generator"] = torch.Generator().manual_seed(torch.initial_seed())
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

    @naming_position
    def _unwrap_distributed(self):
        """Drops the DDP wrappers that ``fit`` made (evaluation uses the bare modules anyway).

        A DDP module still alive when the recipe destroys the process group
        makes gloo abort some processes at exit ("terminate called without an
        active exception": 6 of 40 runs of a minimal 2-process gloo script,
        torch 2.14; none of 28 once the DDP module was freed first).
        """
        if not any(isinstance(module, torch.nn.parallel.DistributedDataParallel) for module in self.modules.values()):
            return
        for name, module in self.modules.items():
            if isinstance(module, torch.nn.parallel.DistributedDataParallel):
                self.modules[name] = module.module
        gc.collect()  # frees the wrappers now, should they sit in reference cycles

    @naming_position
    def fit_normalizer(self, train_set, loader_kwargs):
        """Estimates the per-Mel-bin statistics on the training set, unless a checkpoint has them."""
        self.position = "the estimation of the feature statistics"
        if self.checkpointer is not None and self.checkpointer.find_checkpoint() is not None:
            logger.info("Resuming: feature statistics come with the checkpoint.")
            return
        loader = sb.dataio.dataloader.make_dataloader(train_set, **loader_kwargs)
        with torch.no_grad():
            self.modules.normalizer.fit(
                self.modules.compute_features(batch.sig.data.to(self.device)) for batch in loader
            )
        broadcast_buffers(self.modules.normalizer)

    def attack_loss_scale(self):
        """Loss scale for attack gradients: fp16 gradients underflow, and a zero has no sign."""
        return self.scaler.get_scale() if self.scaler.is_enabled() else 1.0

    @naming_position
    def evaluate_robustness(self, dataset, eps_grid, max_key="UAR", loader_kwargs=None):
        """UAR on real data (eps = 0) and on the attack's fake data for each eps.

        The attack in ``hparams.attack`` is run against the checkpoint that
        ``max_key`` selects (the best by that key; the most recent if None);
        FGSM computes one input gradient per batch for the whole grid.

        Returns
        -------
        dict
            eps -> ``ConfusionMatrix`` (summed over DDP ranks).
        """
        self.position = f"the robustness evaluation of {len(dataset)} utterances"
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


NOISE_KEYS = ("waveform_noise", "feature_noise")


def noise_of(hparams):
    """``{key: noise}`` for the one noise key of the yaml (noise baselines), or None (adversarial training)."""
    found = {key: getattr(hparams, key) for key in NOISE_KEYS if getattr(hparams, key, None) is not None}
    if len(found) > 1:
        raise ValueError(f"Set at most one of the hparams {NOISE_KEYS}, got {sorted(found)}")
    return found or None


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
      training forward (an input-only backward).
    - eval-mode attack (the authors'): a separate eval-mode forward and
      input-only backward.

    When only ``w * L(x)`` reaches the real branch (vanilla; similarity with a
    detached real embedding), the real branch is backpropagated into the
    parameters inside ``compute_objectives``, before the fake forward: the two
    training graphs are never held in memory together, and ``fit_batch``'s
    backward covers the fake branch. When the similarity distance couples the
    branches, ``fit_batch``'s one backward covers both.

    Under DDP, every pass but the fake forward uses the unwrapped model, so the
    reducer sees one forward and all-reduces once per step: gradients already
    in ``.grad`` before that forward are reduced with the fake branch's.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The training attack; hparams 'attack' alone also makes the paper's FGSM report.
        key = "training_attack" if getattr(self.hparams, "training_attack", None) is not None else "attack"
        self.training_attack = getattr(self.hparams, key)
        if not isinstance(self.training_attack, GradientAttack):
            raise TypeError(f"hparams '{key}' must be a GradientAttack, got {self.training_attack!r}")
        if self.training_attack.domain != "features":
            raise TypeError(f"hparams '{key}' must perturb the features to train on them, got {self.training_attack!r}")
        if not isinstance(self.hparams.objective, AdversarialObjective):
            raise TypeError(f"hparams 'objective' must be an AdversarialObjective, got {self.hparams.objective!r}")
        if not int(self.hparams.warmup_steps) >= 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.hparams.warmup_steps!r}")
        self.noise = noise_of(self.hparams)
        self.loss_parts = RunningMeans()
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("loss_parts", self.loss_parts, optional_load=True)

    @property
    def adversarial_step(self):
        """False during the clean warm-up."""
        return self.optimizer_step >= self.hparams.warmup_steps

    @property
    def fused_step(self):
        """Whether one backward can give both the real term's parameter gradients and the attack's input gradient."""
        attack, objective = self.training_attack, self.hparams.objective
        return (
            self.noise is None
            and attack.model_mode == "train"
            and attack.label_source == "target"
            and not attack.targeted
            and attack.uses_given_gradient
            and objective.real_weight > 0
            and not objective.couples_real_branch
        )

    def compute_forward(self, batch, stage):
        """The real forward; in adversarial steps it runs outside DDP (see the class docstring)."""
        if stage != sb.Stage.TRAIN or not self.adversarial_step:
            return super().compute_forward(batch, stage)
        batch = batch.to(self.device)
        feats = self.compute_features(batch.sig.data).detach()
        feats.requires_grad_(self.noise is None and self.training_attack.model_mode == "train")
        logits, embedding = self.model(feats)
        return {"feats": feats, "logits": logits, "embedding": embedding}

    def compute_objectives(self, predictions, batch, stage):
        """The objective on the real batch and its FGSM twin (clean loss in warm-up and evaluation).

        The real branch is backpropagated here, into what each pass must
        produce (see the class docstring); ``fit_batch``'s backward of the
        returned loss covers the fake branch.
        """
        if stage != sb.Stage.TRAIN or not self.adversarial_step:
            return super().compute_objectives(predictions, batch, stage)
        objective = self.hparams.objective
        targets = self.targets(batch)
        feats = predictions["feats"]
        real = (predictions["logits"], predictions["embedding"])
        if objective.couples_real_branch:
            # The distance sends gradient into the real branch, and it needs the
            # fake embedding, so both branches go through fit_batch's single
            # backward: a separate real-branch backward after the DDP-wrapped
            # fake forward would be reduced on its own, and the ranks would drift.
            # (With a train-mode attack this backward also recomputes the input
            # gradient, which cannot be excluded from fit_batch's backward.)
            gradient = self.attack_gradient(feats, real[0], targets)
            fake = self.modules.model(self.fake_inputs(batch, feats.detach(), targets, gradient))
            parts = objective(real, fake, targets)
        else:
            # Only w * L(x) reaches the real branch: it is backpropagated before
            # the fake forward, which frees the real graph (lower peak memory).
            real_term = self.scaled(objective.real_weight * classification_loss(real[0], targets))
            if self.fused_step:
                real_term.backward()  # the parameter gradients and the attack's input gradient
                gradient = feats.grad
            else:
                gradient = self.attack_gradient(feats, real[0], targets)
                real_term.backward(inputs=[p for p in self.modules.parameters() if p.requires_grad])
            real = tuple(output.detach() for output in real)
            fake = self.modules.model(self.fake_inputs(batch, feats.detach(), targets, gradient))
            parts = objective(real, fake, targets)
        self.accumulate_parts(parts)
        return parts["loss"]

    def fake_inputs(self, batch, feats, targets, gradient):
        """The fake twin of the real features: the attack's, or a noisy copy (noise baselines)."""
        if self.noise is None:
            return self.training_attack.perturb(self.model, feats, targets, gradient=gradient)
        if "waveform_noise" in self.noise:
            wavs, lengths = batch.sig.data.to(self.device), batch.sig.lengths.to(self.device)
            return self.compute_features(self.noise["waveform_noise"](wavs, lengths)).detach()
        return self.noise["feature_noise"](feats)

    def scaled(self, loss):
        """``loss`` as ``fit_batch`` backpropagates it: loss-scaled, divided for gradient accumulation."""
        return self.scaler.scale(loss / self.grad_accumulation_factor)

    def attack_gradient(self, feats, logits, targets):
        """The attack's input gradient at ``feats``, or None if the attack would not use it.

        In train mode it comes from the training forward (whose graph is kept
        for the parameters' backward); in eval mode, from the attack's own pass.
        (PGD with a random start takes its first gradient elsewhere: None.)
        """
        attack = self.training_attack
        if self.noise is not None or not attack.uses_given_gradient:
            return None
        if attack.model_mode == "train":
            labels = attack.labels(logits, targets)
            return attack.gradient_from_logits(logits, feats, labels, self.attack_loss_scale(), retain_graph=True)
        gradient, _ = attack.input_gradient(self.model, feats, targets, loss_scale=self.attack_loss_scale())
        return gradient

    def accumulate_parts(self, parts):
        self.loss_parts.append({name: value.detach() for name, value in parts.items() if name != "loss"})

    def train_loss_parts(self):
        """Epoch means of the real loss, the fake loss and the distance."""
        return self.loss_parts.summarize()
