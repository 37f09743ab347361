"""Runs the recipe of the yaml file (DEMoS, or EmoDB for the
files under ``recipes/EmoDB``) and kills itself with SIGKILL at a chosen point,
as an out-of-memory killer or a cluster scheduler would:

    python tests/integration/killed_run.py after:4 hparams/cnn4_vanilla.yaml --output_folder=...
    python tests/integration/killed_run.py during:3 hparams/cnn4_vanilla.yaml --output_folder=...

``after:N``: right after the process's N-th intra-epoch checkpoint is
complete; ``during:N``: while the N-th one is being written, just after
its model file; ``epoch_save:N``: while the N-th end-of-epoch checkpoint is
being written, just after its model file; ``valid:N``: while epoch N is
validated, at its first dev batch; ``export:1``: while the pretrained
interface is being exported, just after its model file.
"""

import os
import pathlib
import runpy
import signal
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/, for helpers
from helpers import recipe_script  # noqa: E402


def _run_and_kill(spec, argv):
    """Runs train.py with ``argv`` and SIGKILLs this process at ``spec`` (see the module docstring)."""
    import shutil

    import speechbrain.core
    import speechbrain.utils.checkpoints

    when, n = spec.split(":")
    n, count, epoch_saves = int(n), 0, 0
    brain_save, torch_save, copyfile = speechbrain.core.Brain._save_intra_epoch_ckpt, torch.save, shutil.copyfile
    evaluate_batch = speechbrain.core.Brain.evaluate_batch
    write_meta = speechbrain.utils.checkpoints.Checkpointer._save_checkpoint_metafile

    def save_intra_epoch_checkpoint(self):
        nonlocal count
        count += 1
        brain_save(self)
        if when == "after" and count == n:
            os.kill(os.getpid(), signal.SIGKILL)

    def save_meta(self, fpath, meta_to_include=None, end_of_epoch=True):
        nonlocal epoch_saves
        epoch_saves += bool(end_of_epoch)  # SpeechBrain writes a checkpoint's meta file first
        return write_meta(self, fpath, meta_to_include, end_of_epoch)

    def save(obj, path, *args, **kwargs):
        torch_save(obj, path, *args, **kwargs)
        if str(path).endswith("model.ckpt") and (
            (when == "during" and count == n) or (when == "epoch_save" and epoch_saves == n)
        ):
            os.kill(os.getpid(), signal.SIGKILL)

    def evaluate_dev_batch(self, batch, stage):
        if when == "valid" and stage == speechbrain.Stage.VALID and self.hparams.epoch_counter.current == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return evaluate_batch(self, batch, stage)

    def copy(source, target, *args, **kwargs):
        copyfile(source, target, *args, **kwargs)
        if when == "export" and pathlib.Path(target).match("interface/model.ckpt"):
            os.kill(os.getpid(), signal.SIGKILL)

    speechbrain.core.Brain._save_intra_epoch_ckpt = save_intra_epoch_checkpoint
    speechbrain.utils.checkpoints.Checkpointer._save_checkpoint_metafile = save_meta
    speechbrain.core.Brain.evaluate_batch = evaluate_dev_batch
    torch.save = save
    shutil.copyfile = copy
    script = pathlib.Path(recipe_script(argv[0])).resolve()
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    _run_and_kill(sys.argv[1], sys.argv[2:])
