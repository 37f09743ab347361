"""Reloading a finished training run from its output folder, as the evaluation commands do."""

import os

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from ser_adv_brain.data.dataio import manifests_of
from ser_adv_brain.models import WaveformClassifier
from ser_adv_brain.runs.datasets import checked_datasets
from ser_adv_brain.training.brain import build_brain
from ser_adv_brain.training.checkpoints import selection_key
from ser_adv_brain.training.distributed import set_collective_timeout


def load_trained(folder, argv=(), extra_overrides=""):
    """The hparams, datasets and Brain of a training output folder, as its run saved them.

    ``argv`` holds command-line overrides and run options (as for train.py);
    ``extra_overrides`` is yaml appended to them. The Brain is built, not yet
    restored: evaluations restore the checkpoint ``select_checkpoint`` names.
    """
    if any(arg.split("=", 1)[0] == "--output_folder" for arg in argv):
        raise ValueError(
            f"--output_folder: the results are written into {folder!r} itself; to keep its present ones, "
            "copy the folder and give the copy."
        )
    hparams_file = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(hparams_file):
        raise FileNotFoundError(f"{folder!r} is not a training output folder: it has no hyperparams.yaml.")
    _, run_opts, overrides = sb.parse_arguments([hparams_file, *argv])
    # The saved yaml names its output folder relative to where training ran.
    overrides = (overrides or "") + f"\noutput_folder: {os.path.abspath(folder)}\n" + extra_overrides
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    datasets = checked_datasets(hparams, manifests_of(hparams), hparams["n_frames"])
    set_collective_timeout(hparams["ddp_timeout_minutes"])
    brain = build_brain(hparams, run_opts)
    # Without a checkpoint an evaluation would attack the untrained model, with only an INFO line.
    if brain.checkpointer.find_checkpoint() is None:
        raise FileNotFoundError(
            f"{folder!r} has no checkpoint in {brain.checkpointer.checkpoints_dir}: train it first. (Its "
            "hyperparams.yaml names the folders of the run as it was trained; if the folder was moved since, "
            "change those paths in it.)"
        )
    return hparams, datasets, brain


class TrainedModel:
    """A finished run's restored model (the checkpoint its ``select_checkpoint`` names, in eval mode), with its
    normaliser, its waveform pipeline and its datasets: what the transfer matrix, the targeted matrix and a
    transfer attack's source run. A model that takes the waveform has no normaliser (None) and is its own
    waveform pipeline."""

    def __init__(self, folder, run_options=()):
        """``run_options``: SpeechBrain's, as on a command line (``["--device=cuda:0"]``)."""
        self.folder = folder
        self.hparams, self.datasets, self.brain = load_trained(folder, [*run_options, "--noprogressbar"])
        self.brain.on_evaluate_start(max_key=selection_key(self.hparams["select_checkpoint"]))
        self.brain.modules.eval()
        self.model = self.brain.model
        if self.brain.takes_waveform:  # a self-supervised model: no features, it is its own waveform model
            self.normalizer, self.waveform_model = None, self.model
        else:
            self.normalizer = self.brain.modules.normalizer
            self.waveform_model = WaveformClassifier(
                self.brain.modules.compute_features, self.normalizer, self.model
            ).eval()

    def batches(self, split):
        """``(ids, wavs, targets)`` of the split, in the order of its manifest."""
        loader_kwargs = {**self.hparams["test_dataloader_options"], "ckpt_prefix": None}
        loader = self.brain.make_dataloader(self.datasets[split], sb.Stage.TEST, **loader_kwargs)
        for batch in loader:
            batch = batch.to(self.brain.device)
            yield list(batch.id), batch.sig.data, self.brain.targets(batch)
