"""The machinery of an emotion classifier's SpeechBrain ``Brain``: DDP, checkpoints, logs, UAR, attacks.

What a training step computes (clean, or adversarial with an attack and an
objective) is the yaml's ``training_step`` (see ``ser_adv_brain.training_steps``);
a recipe's ``Brain`` subclass runs it in ``compute_forward`` / ``compute_objectives``.
"""

import functools
import gc
import logging

import speechbrain as sb
import torch
import tqdm
from speechbrain.dataio.batch import PaddedData

from ser_adv_brain.attacks.base import keyed_seed
from ser_adv_brain.metrics import ConfusionMatrix, RunningMeans
from ser_adv_brain.models import WaveformClassifier, takes_waveform
from ser_adv_brain.training.checkpoints import GeneratorStates
from ser_adv_brain.training.distributed import out_of_step_errors
from ser_adv_brain.training_steps import TrainingStep

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
    """What every emotion recipe's Brain shares: DDP, checkpoints, logs, UAR, evaluation under attack.

    A recipe subclasses it and writes ``compute_forward`` and
    ``compute_objectives`` (``recipes/DEMoS/train.py``): a training batch
    runs the yaml's ``training_step`` (``training_step.forward``,
    ``training_loss``), an evaluation batch the features and the bare
    ``model`` (``record_predictions`` counts it). Evaluation under attack
    (``evaluate_under_attack``) needs neither, so evaluation commands use this
    class as it is.

    Expected ``modules``: ``compute_features`` (``LogMel``), ``normalizer``
    (``FeatureNormalizer``) and ``model`` (returns ``(logits, embedding)``);
    as modules they follow the Brain to its device. A model that takes the
    waveform itself (``takes_waveform``: a ``SelfSupervisedClassifier``) needs
    neither of the first two: ``compute_features`` hands it the audio, and a waveform attack
    attacks it as it is (``waveform_model``). Expected hparams:
    ``n_classes``, ``epoch_counter``; ``label_encoder`` is added by the recipe. Beyond
    ``sb.Brain``'s arguments: ``training_step`` (a ``TrainingStep``) and
    ``sync_batchnorm`` (under DDP on GPUs, SyncBatchNorm across processes).

    ``position`` says where the Brain is (stage, epoch, batch); under DDP a
    collective that fails or times out raises a ``ProcessesOutOfStepError``
    that names it.
    """

    position = "the start"
    stage_name = "TRAIN stage"  # until a stage starts (fit_batch called on its own)
    noisy_confusion = None  # an evaluation stage's counts on noisy copies, for a model trained on them only

    def __init__(self, *args, training_step=None, sync_batchnorm=False, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(training_step, TrainingStep):
            raise TypeError(
                f"hparams 'training_step' must be a TrainingStep (ser_adv_brain.training_steps), got {training_step!r}"
            )
        self.chosen_training_step, self.sync_batchnorm = training_step, bool(sync_batchnorm)
        self.loss_parts = RunningMeans()
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("loss_parts", self.loss_parts, optional_load=True)
            generators = training_step.generators()
            if generators:  # a training attack's random starts, drawn from its own generator
                self.checkpointer.add_recoverable(
                    "training_generators", GeneratorStates(generators), optional_load=True
                )

    @property
    def training_step(self):
        """The yaml's training step as it runs now (a warm-up runs the clean step)."""
        return self.chosen_training_step.at(self.optimizer_step)

    @property
    def model(self):
        """The model without its DDP wrapper: for passes that must not touch DDP's reducer."""
        model = self.modules.model
        return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model

    @property
    def takes_waveform(self):
        """Whether the model takes the waveform itself (its ``input_domain``; see ``models.takes_waveform``)."""
        return takes_waveform(self.model)

    @property
    def waveform_model(self):
        """The bare model as a waveform attack sees it, waveforms -> ``(logits, embedding)``, differentiable:
        the model itself if it takes the waveform, else log-Mel, normaliser and model (``WaveformClassifier``)."""
        if self.takes_waveform:
            return self.model
        return WaveformClassifier(self.modules.compute_features, self.modules.normalizer, self.model)

    def compute_features(self, wavs):
        """Waveforms ``[batch, time]`` -> the model's input: normalised log-Mel ``[batch, frames, n_mels]``,
        or the waveforms themselves for a model that takes them."""
        if self.takes_waveform:
            return wavs
        return self.modules.normalizer(self.modules.compute_features(wavs))

    def targets(self, batch):
        return batch.emo_encoded.data.view(-1).to(self.device)

    @torch.no_grad()
    def augment_batch(self, batch, wav_augment):
        """Passes the training batch's audio through ``wav_augment``, as SpeechBrain's recipes augment (the yaml's
        ``speechbrain.augment.augmenter.Augmenter``, or any module ``(wavs, lengths) -> (wavs, lengths)``).

        In place, so that the training step's loss reads the audio its forward saw; where the augmenter adds
        copies (``concat_original``, ``repeat_augment``, ``parallel_augment``) the labels and utterance IDs
        are replicated as it replicates the audio (``replicate_labels``). The training step then makes its
        fake twin from the augmented audio: a waveform attack perturbs the audio as augmented (a room's
        recording, say), the perturbation added after the augmentation.
        """
        wavs, lengths = wav_augment(batch.sig.data, batch.sig.lengths)
        if len(wavs) != len(batch.id):
            rows = wav_augment.replicate_labels(torch.arange(len(batch.id), device=wavs.device))
            labels = batch.emo_encoded
            picked = [tensor[rows.to(tensor.device)] for tensor in labels]
            batch.emo_encoded = PaddedData(*picked)
            batch.id = [batch.id[row] for row in rows.tolist()]
        batch.sig = PaddedData(wavs, lengths)

    def training_loss(self, predictions, batch):
        """The training step's loss, for ``compute_objectives``; its parts (real loss, fake loss...) are logged."""
        parts = self.training_step.loss(self, predictions, batch)
        extra = {name: value.detach() for name, value in parts.items() if name != "loss"}
        if extra:
            self.loss_parts.append(extra)
        return parts["loss"]

    def record_predictions(self, logits, targets, loss):
        """Counts an evaluation batch for the stage's UAR, accuracy and mean loss (summed over DDP ranks)."""
        self.confusion.append(logits.argmax(dim=-1), targets)
        self.loss_sum += float(loss) * len(targets)

    def on_fit_start(self):
        """SpeechBrain's start of training, then the training step the yaml chose, in the log."""
        super().on_fit_start()
        step = self.chosen_training_step
        warmup = f", after {step.warmup_steps} clean optimizer steps (CleanStep)" if step.warmup_steps else ""
        logger.info(f"Training step: {step!r}{warmup}")

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
            noisy = self.chosen_training_step.trains_on_noisy_copies_only
            self.noisy_confusion = ConfusionMatrix(self.hparams.n_classes) if noisy else None

    def evaluate_batch(self, batch, stage):
        """SpeechBrain's evaluation of a batch; for a model trained on noisy copies only, also its predictions
        on a noisy copy (``count_noisy_predictions``)."""
        loss = super().evaluate_batch(batch, stage)
        if self.noisy_confusion is not None:
            self.count_noisy_predictions(batch)
        return loss

    @torch.no_grad()
    def count_noisy_predictions(self, batch):
        """Counts the model's predictions on one noisy copy of ``batch``, made by the training step, for the
        stage's ``noisy_UAR``.

        A model trained on noisy copies only (randomised smoothing's base classifier) has never seen a clean
        input: its clean UAR says nothing of whether training works, its UAR on the noise it is trained for
        does (and is what the smoothed classifier's vote counts, one draw at a time). The noise is drawn
        from a seed of the batch's utterance IDs (``keyed_seed``, as the attacks' keyed draws) with the
        global generators forked, so every epoch scores the same
        noisy copies (dev figures differ by the model alone) and training's random stream, which the
        checkpoints save, is left as it was.
        """
        batch = batch.to(self.device)
        devices = [self.device] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.evaluation_ctx:
            torch.manual_seed(keyed_seed(0, ",".join(batch.id)))
            feats = self.chosen_training_step.noisy_features(self, batch)
            logits, _ = self.model(feats)
        self.noisy_confusion.append(logits.argmax(dim=-1), self.targets(batch))

    def eval_stats(self, stage_loss):
        """Loss, UAR and accuracy of the finished evaluation stage, summed over DDP ranks."""
        self.confusion.all_reduce(self.device)
        total = torch.tensor([self.loss_sum], dtype=torch.float64, device=self.device)
        sb.utils.distributed.ddp_all_reduce(total, torch.distributed.ReduceOp.SUM)
        count = int(self.confusion.counts.sum())
        loss = float(total) / count if count else stage_loss
        stats = {"loss": loss, "UAR": self.confusion.uar(), "accuracy": self.confusion.accuracy()}
        if self.noisy_confusion is not None:
            self.noisy_confusion.all_reduce(self.device)
            stats["noisy_UAR"] = self.noisy_confusion.uar()
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """The stage's statistics (kept in ``train_stats`` after training); after validation, keeps
        the checkpoint with the best dev UAR. A recipe's Brain logs the statistics afterwards: a run
        killed while saving redoes this validation when resumed, and must not find the epoch already logged.
        """
        self.position = f"the end of the {self.stage_name} (statistics, logs, checkpoint)"
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, **self.train_loss_parts()}
            return self.train_stats
        stats = self.eval_stats(stage_loss)
        if stage == sb.Stage.VALID:
            keys = [key for key in ("UAR", "noisy_UAR") if key in stats]
            self.checkpointer.save_and_keep_only(meta={key: stats[key] for key in keys}, max_keys=keys)
        return stats

    def train_loss_parts(self):
        """Epoch means of the training loss's parts (adversarial steps: real loss, fake loss, distance)."""
        return self.loss_parts.summarize()

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
        process normalises its own batch unless ``sync_batchnorm`` is True.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        sync_bn = self.sync_batchnorm and self.device_type == "cuda"
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
        """Estimates the per-Mel-bin statistics on the training set, unless a checkpoint has them
        (or the model takes the waveform, and has no features to normalise)."""
        if self.takes_waveform:
            return
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

    def scaled(self, loss):
        """``loss`` as ``fit_batch`` backpropagates it: loss-scaled, divided for gradient accumulation."""
        return self.scaler.scale(loss / self.grad_accumulation_factor)

    def attack_loss_scale(self):
        """Loss scale for attack gradients: fp16 gradients underflow, and a zero has no sign."""
        return self.scaler.get_scale() if self.scaler.is_enabled() else 1.0

    @naming_position
    def evaluate_under_attack(self, dataset, attack, eps_grid, max_key="UAR", loader_kwargs=None):
        """UAR on real data (eps = 0) and on the attack's fake data for each eps.

        The attack is run against the checkpoint that
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
        for batch in tqdm.tqdm(loader, desc=f"FGSM report ({len(dataset)} utterances)", disable=self.noprogressbar):
            batch = batch.to(self.device)
            targets = self.targets(batch)
            with self.evaluation_ctx:
                feats = self.compute_features(batch.sig.data)
                for eps, fake in attack.curve(self.model, feats, targets, eps_grid, loss_scale):
                    with torch.no_grad():
                        logits, _ = self.model(fake)
                    confusions[eps].append(logits.argmax(dim=-1), targets)
        for confusion in confusions.values():
            confusion.all_reduce(self.device)
        return confusions


def build_brain(hparams, run_opts, brain_class=EmotionBrain):
    """Instantiates ``brain_class`` with the yaml's modules, optimiser and checkpointer.

    The default ``EmotionBrain`` evaluates under attack but has no
    ``compute_forward``: training needs a recipe's Brain.
    """
    return brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        training_step=hparams["training_step"],
        sync_batchnorm=hparams["sync_batchnorm"],
    )
