"""Checkpoints that survive interruptions: written atomically, with the random state of the run.

Both classes plug into SpeechBrain's checkpointing from the yaml: the
checkpointer is an ``AtomicCheckpointer`` and its recoverables include a
``RandomState``. Together with SpeechBrain's intra-epoch checkpoints
(``ckpt_interval_minutes``) and resumable data loaders, a run killed at any
point resumes from its last checkpoint and, with ``num_workers: 0``, reaches
exactly the results of an uninterrupted run on the same host, kernel setting
and thread count, under ``torchrun`` too (every process restores its own
random state).

Everything here is saved as tensors and plain Python values, so it loads
with ``torch.load(weights_only=True)``, which cannot run code.
"""

import functools
import logging
import pathlib
import random
import shutil

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    Checkpoint,
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, get_rank, if_main_process, main_process_only

logger = logging.getLogger(__name__)

STAGING_PREFIX = "saving-"


# yaml ``select_checkpoint`` -> the key ``Brain.evaluate`` recovers by. None recovers the most
# recent checkpoint, which ``save_and_keep_only`` keeps beside the best (keep_recent=True).
# ``noisy_UAR`` exists for models trained on noisy copies only (randomised smoothing's base classifier).
CHECKPOINT_SELECTION = {"best_dev": "UAR", "best_noisy_dev": "noisy_UAR", "final": None}


def selection_key(choice):
    """The key that selects the checkpoint to test (yaml ``select_checkpoint``): best dev UAR, best dev UAR on
    the training's noisy copies (a model that sees no clean input), or the final one (the authors' code).

    Example
    -------
    >>> selection_key("final") is None
    True
    """
    if choice not in CHECKPOINT_SELECTION:
        raise ValueError(f"select_checkpoint must be one of {sorted(CHECKPOINT_SELECTION)}, got {choice!r}")
    return CHECKPOINT_SELECTION[choice]


def checkpoint_identity(checkpoint):
    """A checkpoint's name for what depends on it (a universal perturbation, an evaluation's progress): its
    folder's name and save time, not its path, so a run's folder can be moved or copied (or named relative at
    training and absolute later) and stay the same run.

    Example
    -------
    >>> checkpoint = Checkpoint(pathlib.Path("/runs/a/save/CKPT+1"), {"unixtime": 1.5}, {})
    >>> checkpoint_identity(checkpoint) == checkpoint_identity(checkpoint._replace(path=pathlib.Path("save/CKPT+1")))
    True
    """
    return [pathlib.PurePath(checkpoint.path).name, checkpoint.meta.get("unixtime")]


def rank_file(path, rank=None):
    """Where DDP rank ``rank`` (this process's by default) keeps its own copy of a checkpoint file.

    Rank 0 (and a run without DDP) uses ``path`` itself; rank N ``<stem>.rankN<suffix>`` beside it.
    SpeechBrain lists a checkpoint's files by their ``.ckpt`` suffix, so these names must not end with it.

    Example
    -------
    >>> rank_file("CKPT+1/random_state.ckpt", rank=0), rank_file("CKPT+1/random_state.ckpt", rank=2)
    (PosixPath('CKPT+1/random_state.ckpt'), PosixPath('CKPT+1/random_state.ckpt.rank2'))
    """
    path = pathlib.Path(path)
    rank = get_rank() or 0 if rank is None else rank
    return path if rank == 0 else path.with_name(f"{path.name}.rank{rank}")


def load_own_file(path):
    """This rank's copy of a per-rank checkpoint file (``rank_file``), loaded weights-only.

    A rank without a copy of its own (the checkpoint was written by fewer
    DDP processes) gets rank 0's, with a warning: the run goes on, but its
    random draws differ from an uninterrupted run's.
    """
    own = rank_file(path)
    if not own.exists():
        logger.warning(
            f"{own} does not exist (the checkpoint was written by fewer DDP processes): rank {get_rank()} "
            "resumes with rank 0's random state, so its random draws differ from an uninterrupted run's."
        )
        own = pathlib.Path(path)
    return torch.load(own, weights_only=True)


# Every process saves its own state (SpeechBrain's default hooks save on the main process only).
@functools.partial(register_checkpoint_hooks, save_on_main_only=False)
class RandomState:
    """The states of torch's (CPU and CUDA), numpy's and Python's global random generators, per DDP rank.

    Random crops in the data pipeline and dropout draw from these
    generators: a run resumed from an intra-epoch checkpoint draws exactly
    what the interrupted run would have drawn only if they are restored
    with the model. Declare it among the checkpointer's recoverables.

    Under DDP every rank draws the crops of its own shard of the data, so
    the ranks' states differ: each rank writes and reads its own file
    (``rank_file``). A rank that finds no file of its own (the checkpoint
    was written by fewer processes) takes rank 0's state and says so:
    the run goes on, but no longer as the uninterrupted one would.

    Example
    -------
    >>> state = RandomState()
    >>> path = getfixture("tmp_path") / "rng.ckpt"
    >>> state.save(path)
    >>> first = torch.rand(3)
    >>> state.load(path, end_of_epoch=False)
    >>> bool((torch.rand(3) == first).all())
    True
    """

    @mark_as_saver
    def save(self, path):
        _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
        state = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # numpy's key as a tensor and Python's as a tuple of ints: weights_only-loadable
            "numpy": (torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": random.getstate(),
        }
        torch.save(state, rank_file(path))

    @mark_as_loader
    def load(self, path, end_of_epoch):
        del end_of_epoch  # the state is restored wherever the checkpoint was taken
        state = load_own_file(path)
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        elif state["cuda"] or torch.cuda.is_available():
            logger.warning("The checkpoint's CUDA random state does not fit this machine's GPUs: not restored.")
        key, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


@functools.partial(register_checkpoint_hooks, save_on_main_only=False)
class GeneratorStates:
    """The states of given ``torch.Generator``s, per DDP rank (see ``RandomState``).

    A training attack with random starts draws from a generator of its own
    (never torch's global one); the Brain declares the training step's
    generators with this recoverable, so that a resumed run draws the
    starts an uninterrupted one would.

    Arguments
    ---------
    generators : list of torch.Generator

    Example
    -------
    >>> generator = torch.Generator().manual_seed(0)
    >>> states, path = GeneratorStates([generator]), getfixture("tmp_path") / "generators.ckpt"
    >>> states.save(path)
    >>> first = torch.rand(2, generator=generator)
    >>> states.load(path, end_of_epoch=False)
    >>> bool((torch.rand(2, generator=generator) == first).all())
    True
    """

    def __init__(self, generators):
        self.generators = list(generators)

    @mark_as_saver
    def save(self, path):
        torch.save([generator.get_state() for generator in self.generators], rank_file(path))

    @mark_as_loader
    def load(self, path, end_of_epoch):
        del end_of_epoch
        states = load_own_file(path)
        if len(states) != len(self.generators):
            raise ValueError(
                f"{path} holds {len(states)} generator states, but the training step has "
                f"{len(self.generators)} generators: was it saved by a run of another yaml?"
            )
        for generator, state in zip(self.generators, states):
            generator.set_state(state)


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer``, except that a checkpoint appears only once it is complete.

    SpeechBrain writes a checkpoint in place, its ``CKPT.yaml`` first: a job
    killed while saving, or a save that fails (full disk, no permission),
    leaves a folder that passes for the newest checkpoint, and resuming
    picks it and fails. Here every file is written into a staging folder
    that checkpoint listings ignore (its name does not start with ``CKPT``),
    which is then renamed to its final name, an atomic step. A failed save
    removes its staging folder and re-raises; one cut short by a kill leaves
    it behind, and the next save removes it. Older checkpoints are deleted
    only after the new one is complete (as in SpeechBrain), so the last
    good checkpoint always survives.

    Under DDP every process decides from the same checkpoints. SpeechBrain
    lets each process list the folder itself and then runs one collective
    per checkpoint *it* chose to delete: two processes that list different
    folders wait in different collectives forever. Here the main process
    renames before a second barrier, so no process goes on while the
    folder changes, and the main process's listing is broadcast to the
    others, so that a shared file system whose directory listings lag
    behind on other machines cannot make them differ either. Deletion,
    resume and the choice of the checkpoint to test and export all list
    through ``list_checkpoints``.

    Arguments
    ---------
    Those of ``speechbrain.utils.checkpoints.Checkpointer``.

    Example
    -------
    >>> model = torch.nn.Linear(2, 2)
    >>> checkpointer = AtomicCheckpointer(getfixture("tmp_path"), {"model": model})
    >>> checkpoint = checkpointer.save_checkpoint()
    >>> checkpoint.path.name.startswith("CKPT")
    True
    """

    def _new_checkpoint_dirpath(self):
        return self._staging(super()._new_checkpoint_dirpath())

    def _custom_checkpoint_dirpath(self, name):
        return self._staging(super()._custom_checkpoint_dirpath(name))

    def _staging(self, final_path):
        self._staged = final_path.with_name(STAGING_PREFIX + final_path.name)
        return self._staged

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Saves a checkpoint as SpeechBrain does, into a staging folder renamed when complete.

        Returns
        -------
        Checkpoint
            With its final path; ``None`` on processes other than the main one.
        """
        if if_main_process():
            for stale in self.checkpoints_dir.glob(STAGING_PREFIX + "*"):
                logger.warning(f"Removing {stale}, a checkpoint whose saving was interrupted.")
                shutil.rmtree(stale, ignore_errors=True)
        self._staged = None
        try:
            staged = super().save_checkpoint(meta, end_of_epoch, name, verbosity=logging.DEBUG)
            ddp_barrier()  # every process has written its files
        except BaseException:
            if if_main_process() and self._staged is not None:
                shutil.rmtree(self._staged, ignore_errors=True)
            raise
        checkpoint = None if staged is None else self._publish(staged, end_of_epoch, verbosity)
        ddp_barrier()  # no process goes on before the checkpoint has its final name
        return checkpoint

    def _publish(self, staged, end_of_epoch, verbosity):
        """Renames a complete staged checkpoint to its final name (main process)."""
        final = staged.path.with_name(staged.path.name[len(STAGING_PREFIX) :])
        replace_directory(staged.path, final)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
        paramfiles = {key: final / path.name for key, path in staged.paramfiles.items()}
        return Checkpoint(final, staged.meta, paramfiles)

    def list_checkpoints(self):
        """The checkpoints the main process finds, on every process (one broadcast under DDP)."""
        return main_process_only(super().list_checkpoints)()


def replace_directory(source, target):
    """Renames ``source`` to ``target``; an existing ``target`` is replaced (moved aside first, then deleted)."""
    source, target = pathlib.Path(source), pathlib.Path(target)
    if target.exists():
        old = target.with_name(STAGING_PREFIX + "old-" + target.name)
        target.rename(old)
        source.rename(target)
        shutil.rmtree(old)
    else:
        source.rename(target)
