"""An evaluation's outcomes kept on disk batch by batch, so that a killed evaluation resumes where it stopped.

A standard-tier evaluation of one model, or a smoothed classifier's certificates, can take hours on a CPU
(``bench/README.md``); without this, a killed one started over. The attack suite (its ``SplitOutcomes``), the
certificates and the smoothed classifier's adaptive attack write each batch's outcomes as the batch ends; a
rerun of the same evaluation reads them back and works only on the batches not done. The result is the same
as an uninterrupted run's, utterance by utterance: attacks and smoothing noise draw from generators keyed by
the utterance ID, not by the batch or by what ran before (``suite`` and ``smoothing`` modules).

The file belongs to one evaluation: its ``identity`` (``evaluation_identity``: checkpoint, what is evaluated
with every setting, the split's utterances, code version, number of DDP processes) is written with it; a
batch is matched by its utterance IDs; a file of another evaluation is set aside (the log names the parts of
the identity that differ: a new code version is the one a user may not expect), and the evaluation starts
from the first batch. JSON, not pickle: a reader can open it, and loading it runs no code.
"""

import json
import logging
import os

import torch

from ser_adv_brain.training.checkpoints import checkpoint_identity, rank_file

logger = logging.getLogger(__name__)


def progress_path(folder, what, split):
    """``<folder>/<what>_progress_<split>.json`` (``what``: ``suite``, ``certificates``...); under DDP, rank N's
    ``.rankN`` beside it (each rank its batches)."""
    return str(rank_file(os.path.join(folder, f"{what}_progress_{split}.json")))


def scalar_settings(plugin):
    """An attack's or a smoothing's settings: its scalar attributes (budget, steps, loss, sigma, n, seed...)."""
    simple = (bool, int, float, str, type(None))
    return {name: value for name, value in sorted(vars(plugin).items()) if isinstance(value, simple)}


def plan_settings(plan):
    """A suite plan (``suite_plan``) with every attack's class and settings, for an identity."""
    return [
        (group, budget, [(entry.name, type(entry.attack).__name__, scalar_settings(entry.attack)) for entry in entries])
        for group, budget, entries in plan
    ]


def evaluation_identity(checkpoint, ids, code_version, **evaluated):
    """What an evaluation's outcomes depend on, part by part (JSON-ready): the checkpoint (a SpeechBrain
    ``Checkpoint``, by ``checkpoint_identity``: wherever the run's folder is), what is evaluated
    (``plan=plan_settings(...)``, ``early_exit=``, ``smoothing=scalar_settings(...)``), the split's utterances,
    the code and, under DDP, the number of processes."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return {
        "checkpoint": checkpoint_identity(checkpoint),
        "evaluated": repr(sorted(evaluated.items())),
        "utterances": sorted(ids),
        "code_version": code_version,
        "processes": world,
    }


def identity_difference(kept, identity):
    """Which parts of two identities differ, for the log: the code versions are given (a user who updated
    the code may not expect them to matter), other parts by name (their values are long)."""
    if not (isinstance(kept, dict) and isinstance(identity, dict)):
        return "its identity"
    parts = [part for part in identity if kept.get(part) != identity[part]]
    parts += [part for part in kept if part not in identity]
    named = [
        f"code_version ({kept.get(part)}, now {identity[part]})" if part == "code_version" else part for part in parts
    ]
    return ", ".join(named)


def _listed(per_key):
    return [[list(key), values] for key, values in per_key.items()]


class BatchProgress:
    """The batches of one evaluation done so far, in ``path`` (JSON), for an evaluation of ``identity``
    (``evaluation_identity``'s dict of parts, or any value that reads back from JSON equal: lists, not tuples).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "suite_progress_test.json")
    >>> progress = BatchProgress(path, identity="checkpoint A, PGD-10 at eps .02")
    >>> progress.record(["u1", "u2"], {"clean": [3, 1]})
    >>> BatchProgress(path, identity="checkpoint A, PGD-10 at eps .02").done(["u1", "u2"])["clean"]
    [3, 1]
    >>> BatchProgress(path, identity="checkpoint B, PGD-10 at eps .02").done(["u1", "u2"]) is None
    True
    """

    def __init__(self, path, identity):
        self.path, self.identity, self.batches = path, identity, {}
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            kept = json.load(f)
        if kept.get("identity") == self.identity:
            self.batches = {tuple(batch["ids"]): batch for batch in kept["batches"]}
            logger.info(f"Resuming: {len(self.batches)} batch(es) already done, read from {path}")
        else:
            aside = f"{path}.other"
            os.replace(path, aside)
            difference = identity_difference(kept.get("identity"), self.identity)
            logger.warning(
                f"{path} was written by another evaluation (it differs in {difference}): kept as {aside}; "
                "this evaluation starts from its first batch"
            )

    def done(self, ids):
        """The outcomes recorded for the batch of utterances ``ids``, or None if it is not done."""
        return self.batches.get(tuple(ids))

    def record(self, ids, outcomes):
        """Writes a finished batch of utterances ``ids``: ``outcomes``, a dict of JSON-ready values."""
        self.batches[tuple(ids)] = {"ids": list(ids), **outcomes}
        partial = f"{self.path}.partial"
        os.makedirs(os.path.dirname(os.path.abspath(partial)), exist_ok=True)  # an output folder not made yet
        with open(partial, "w", encoding="utf-8") as f:  # replaced whole: a kill mid-write loses nothing done
            json.dump({"identity": self.identity, "batches": list(self.batches.values())}, f)
        os.replace(partial, self.path)

    def remove(self):
        """Forgets the progress (the evaluation's reports are written)."""
        if os.path.isfile(self.path):
            os.remove(self.path)


def batch_outcomes(appended, attacked, forward_rows):
    """One batch of a suite as JSON-ready lists: ``appended`` (``SplitOutcomes.append``'s arguments after
    ``ids``, tensors), its utterance-attacks and forwards per attack."""
    targets, clean, gradient_ok, predictions, details, room_clean = appended
    return {
        "targets": targets.tolist(),
        "clean": clean.tolist(),
        "gradient_ok": gradient_ok.tolist(),
        "predictions": _listed({key: value.tolist() for key, value in predictions.items()}),
        "details": {field: _listed({k: v.tolist() for k, v in per_key.items()}) for field, per_key in details.items()},
        "room_clean": {group: value.tolist() for group, value in room_clean.items()},
        "attacked": attacked,
        "forward_rows": _listed(forward_rows),
    }


def outcomes_of(batch, key_type):
    """``batch_outcomes`` read back: ``SplitOutcomes.append``'s arguments after ``ids``, as tensors, then the
    batch's utterance-attacks and forwards per attack; ``key_type`` makes the attack keys (``AttackKey``)."""

    def keyed(pairs, dtype):
        return {key_type(*key): torch.tensor(values, dtype=dtype) for key, values in pairs}

    appended = (
        torch.tensor(batch["targets"]),
        torch.tensor(batch["clean"]),
        torch.tensor(batch["gradient_ok"], dtype=torch.bool),
        keyed(batch["predictions"], torch.long),
        # NaN (an attack that does not report a field) is not standard JSON, but Python's json writes and reads it.
        {field: keyed(pairs, torch.float64) for field, pairs in batch["details"].items()},
        {group: torch.tensor(values) for group, values in batch["room_clean"].items()},
    )
    forward_rows = {key_type(*key): rows for key, rows in batch["forward_rows"]}
    return appended, batch["attacked"], forward_rows
