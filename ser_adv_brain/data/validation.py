"""Checks of a run's inputs before training starts: hyperparameters, CSV manifests, audio files.

Every problem is collected and reported in one ``DataValidationError``, each
line naming the file, manifest row or hyperparameter and what to do, so that
a bad file surfaces at the start of a run, not hours into it.

The audio check decodes every file once. What it learns (length, rate,
whether the samples are finite or all zero, or the read error) is cached in
``<save_folder>/audio_scan.json`` under the file's path, size and
modification time, so later starts decode only new or changed files.

With ``skip_bad_files: True``, rows whose audio is missing or unusable are
left out with a warning and a count instead; problems of the manifests
themselves (columns, IDs, labels, speakers) always stop the run.
"""

import collections
import csv
import dataclasses
import json
import logging
import math
import os
import re

import torch
from speechbrain.dataio import audio_io
from speechbrain.dataio.encoder import CategoricalEncoder

from ser_adv_brain.data.manifests import SPLITS

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ID", "wav", "emo", "spk_id")
SKIP_HINT = "To leave bad audio files out with a warning instead, set skip_bad_files: True (--skip_bad_files=True)."
MAX_LISTED = 50  # problems shown in the message; all of them go to the report file
VARIABLE = re.compile(r"\$([\w.]+)")  # what SpeechBrain's CSV reader substitutes (load_data_csv)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the inputs.

    Arguments
    ---------
    where : str
        The file, manifest row or hyperparameter at fault.
    what : str
        What is wrong, and what to do about it.
    skippable : bool
        Whether ``skip_bad_files`` may leave it out (bad audio files).
    split, row_id : str or None
        The manifest row to leave out when skipping.
    """

    where: str
    what: str
    skippable: bool = False
    split: str = None
    row_id: str = None

    def __str__(self):
        return f"{self.where}: {self.what}"


class DataValidationError(ValueError):
    """Raised with every problem found; ``problems`` is the list of ``Problem``."""

    def __init__(self, problems, report_file=None):
        self.problems = list(problems)
        self.report_file = report_file
        super().__init__(self.problems)

    def __str__(self):
        lines = [f"{len(self.problems)} problem(s) found before training; nothing was trained:"]
        lines += [f"  - {problem}" for problem in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        if self.report_file:
            lines.append(f"The full list is in {self.report_file}.")
        if any(problem.skippable for problem in self.problems):
            lines.append(SKIP_HINT)
        return "\n".join(lines)


def reader_error(error):
    """The words of a failed audio read: the reader's own, not SpeechBrain's wrapper around them."""
    error = error.__cause__ or error
    return f"{type(error).__name__}: {error}".strip()


def signal_facts(wav, rate):
    """What the audio checks need to know of a decoded signal, ``[time]`` or ``[time, channels]`` at ``rate``.

    Returns
    -------
    dict
        ``frames``, ``rate``, ``finite`` (no NaN or Inf sample) and
        ``nonzero`` (not digital silence).
    """
    return {
        "frames": int(wav.shape[0]),
        "rate": int(rate),
        "finite": bool(torch.isfinite(wav).all()),
        "nonzero": bool(wav.ne(0).any()),
    }


def decode_facts(path):
    """Decodes an audio file and returns its ``signal_facts``, or ``{"error": ...}`` if it cannot be read."""
    try:
        wav, rate = audio_io.load(path, channels_first=False, dtype=torch.float32)
    except Exception as error:  # whatever the reader raises, the file is reported, not crashed on
        return {"error": reader_error(error)}
    return signal_facts(wav, rate)


class AudioScan:
    """``decode_facts`` of many files, cached in a JSON file by path, size and modification time.

    Arguments
    ---------
    cache_file : str
        Created or updated by ``save``; an unreadable cache is ignored.
    """

    def __init__(self, cache_file):
        self.cache_file = cache_file
        self.entries, self.changed = {}, False
        if os.path.isfile(cache_file):
            try:
                with open(cache_file, encoding="utf-8") as f:
                    self.entries = json.load(f)
            except (OSError, ValueError) as error:
                logger.warning(f"Ignoring the unreadable audio scan cache {cache_file} ({error}).")

    def facts(self, path):
        """What ``decode_facts`` says of ``path``, decoding it only if it changed since it was cached."""
        stat = os.stat(path)
        key, stamp = os.path.abspath(path), [stat.st_size, stat.st_mtime_ns]
        entry = self.entries.get(key)
        if entry is None or entry["stamp"] != stamp:
            entry = {"stamp": stamp, "facts": decode_facts(path)}
            self.entries[key] = entry
            self.changed = True
        return entry["facts"]

    def save(self):
        """Writes the cache if anything was decoded (atomically: a kill cannot leave half a file)."""
        if not self.changed:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.cache_file)), exist_ok=True)
        partial = self.cache_file + ".partial"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(self.entries, f)
        os.replace(partial, self.cache_file)
        self.changed = False


@dataclasses.dataclass(frozen=True)
class AudioFault:
    """Why a file or signal is unusable, for training and for the inference interface alike.

    Arguments
    ---------
    kind : str
        One of ``AUDIO_FAULT_KINDS``.
    what : str
        The fault, phrased to follow the file's name ("is all zeros (digital silence)").
    """

    kind: str
    what: str

    def __str__(self):
        return self.what


# What to do about each kind of fault in a training manifest.
AUDIO_FAULT_KINDS = {
    "unreadable": "re-export it as WAV or FLAC, or remove its row",
    "empty": "remove it or its row",
    "non-finite": "re-export it, or remove its row",
    "silent": "remove it or its row",
    "too short": "remove it or its row",
}


def audio_fault(facts, sample_rate, n_fft):
    """What makes audio unusable, from its ``signal_facts`` or ``decode_facts``: an ``AudioFault``, or ``None``.

    Training (``row_problems``) and the inference interface
    (``EmotionRecognizer``) both refuse audio through this one function.
    """
    if "error" in facts:
        return AudioFault("unreadable", f"cannot be decoded ({facts['error']})")
    if facts["frames"] == 0:
        return AudioFault("empty", "has no samples (zero-length)")
    if not facts["finite"]:
        return AudioFault("non-finite", "contains NaN or Inf samples")
    if not facts["nonzero"]:
        return AudioFault("silent", "is all zeros (digital silence)")
    samples = math.ceil(facts["frames"] * sample_rate / facts["rate"])
    if samples < n_fft:
        return AudioFault(
            "too short",
            f"is {samples} samples long at the model's {sample_rate} Hz, shorter than one analysis "
            f"window (n_fft = {n_fft})",
        )
    return None


def audio_problem(facts, sample_rate, n_fft):
    """What makes a file unusable for training, and what to do, from its ``decode_facts``; ``None`` if nothing."""
    fault = audio_fault(facts, sample_rate, n_fft)
    return fault and f"{fault.what}; {AUDIO_FAULT_KINDS[fault.kind]}"


def read_manifest(path, split, remedy=None):
    """Reads a CSV manifest for checking, as SpeechBrain's ``load_data_csv`` reads it; ``remedy`` is what the
    caller's user does about a missing one (a recipe's: its data preparation).

    Returns
    -------
    rows : list of (int, dict)
        Line number and row.
    problems : list of Problem
        A missing file or missing columns (then ``rows`` is empty).
    """
    if not os.path.isfile(path):
        return [], [Problem(path, f"the {split} manifest does not exist" + (f"; {remedy}" if remedy else ""))]
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        try:
            missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                return [], [
                    Problem(
                        path,
                        f"missing column(s) {missing}; a manifest needs the columns "
                        f"{list(REQUIRED_COLUMNS)} (duration and gender are optional)",
                    )
                ]
            rows = []
            for row in reader:
                rows.append((reader.line_num, row))
        except (csv.Error, UnicodeDecodeError) as error:
            return [], [Problem(path, f"is not a readable UTF-8 CSV file ({error}); rewrite it")]
    return rows, []


def row_problems(path, split, rows, scan, sample_rate, n_fft):
    """Problems of single rows: empty fields, bad durations, duplicate IDs, missing or unusable audio."""
    problems, first_line = [], {}
    for line, row in rows:
        where = f"{path} line {line}" + (f" (ID {row['ID']})" if row.get("ID") else "")
        header = [column for column in row if column is not None]  # csv keys extra fields under None
        fields = sum(row[column] is not None for column in header) + len(row.get(None) or ())
        if fields != len(header):
            problems.append(
                Problem(
                    where, f"has {fields} fields where the header has {len(header)}; quote fields that contain commas"
                )
            )
            continue
        variables = sorted({match[0] for value in row.values() for match in VARIABLE.finditer(value)})
        if variables:
            problems.append(
                Problem(
                    where,
                    f"contains {', '.join(variables)}, which SpeechBrain's CSV reader replaces "
                    "as a variable; rename the file or ID without '$'",
                )
            )
            continue
        empty = [column for column in REQUIRED_COLUMNS if not row.get(column)]
        if empty:
            problems.append(Problem(where, f"empty field(s) {empty}; fill them in or remove the row"))
            continue
        if "duration" in row:
            try:
                float(row["duration"])
            except ValueError:
                problems.append(
                    Problem(
                        where,
                        f"duration {row['duration']!r} is not a number (SpeechBrain reads the column "
                        "as seconds); fix it or drop the column",
                    )
                )
        if row["ID"] in first_line:
            problems.append(
                Problem(where, f"duplicate ID, already on line {first_line[row['ID']]}; IDs must be unique")
            )
            continue
        first_line[row["ID"]] = line
        wav = row["wav"]
        if not os.path.isfile(wav):
            what = f"audio file {wav} does not exist; fix the wav column or restore the file"
        else:
            what = audio_problem(scan.facts(wav), sample_rate, n_fft)
            what = what and f"audio file {wav} {what}"
        if what:
            problems.append(Problem(where, what, skippable=True, split=split, row_id=row["ID"]))
    return problems


def label_problems(manifests, known_labels, n_classes, label_file):
    """Training classes that do not match ``n_classes`` or a saved encoder; unknown labels elsewhere."""
    problems = []
    train_path, train_rows = manifests["train"]
    train_labels = sorted({row["emo"] for _, row in train_rows if row.get("emo")})
    if known_labels is None:
        known_labels = set(train_labels)
        if train_rows and len(train_labels) != n_classes:
            problems.append(
                Problem(
                    train_path,
                    f"has {len(train_labels)} emotion classes {train_labels}, but n_classes "
                    f"is {n_classes}; set --n_classes={len(train_labels)} or fix the labels",
                )
            )
        source = "the training set's classes"
    else:
        source = f"the classes of the earlier run's {label_file} (delete it and the checkpoints to start afresh)"
    for split in SPLITS:
        path, rows = manifests[split]
        for line, row in rows:
            if row.get("emo") and row["emo"] not in known_labels:
                problems.append(
                    Problem(
                        f"{path} line {line} (ID {row['ID']})",
                        f"unknown label {row['emo']!r}, not among {source} {sorted(known_labels)}; "
                        "fix the label or remove the row",
                    )
                )
    return problems


def cross_split_problems(manifests):
    """IDs or speakers that occur in more than one split (leaks between training and evaluation)."""
    problems = []
    places = {"ID": collections.defaultdict(dict), "spk_id": collections.defaultdict(dict)}
    for split in SPLITS:
        path, rows = manifests[split]
        for line, row in rows:
            for column, seen in places.items():
                if row.get(column):
                    seen[row[column]].setdefault(split, f"{path} line {line}")
    for column, what, fix in (
        ("ID", "ID", "an utterance belongs to one split"),
        (
            "spk_id",
            "speaker",
            "speaker-independent evaluation needs each speaker in one split: fix split_file or the manifests",
        ),
    ):
        for value, splits in places[column].items():
            if len(splits) > 1:
                problems.append(
                    Problem(
                        f"{what} {value}",
                        f"is in the {' and '.join(splits)} splits ({', '.join(splits.values())}); {fix}",
                    )
                )
    return problems


def minimum_n_frames(n_fft, hop_length):
    """Fewest frames per clip: the centred STFT pads by ``n_fft // 2`` and needs more samples than that."""
    return (n_fft // 2) // hop_length + 2


def hyperparameter_problems(hparams):
    """Hyperparameters that would fail later, or silently do something else than asked."""
    problems = []
    for key in ("dataloader_options", "test_dataloader_options"):
        batch_size = hparams[key].get("batch_size", 1)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            problems.append(
                Problem(
                    f"hyperparameter {key}: batch_size",
                    f"must be an integer >= 1, got {batch_size!r}; set --batch_size",
                )
            )
    for eps in hparams["eval_eps"]:
        if not (isinstance(eps, (int, float)) and 0 <= eps < math.inf):
            problems.append(Problem("hyperparameter eval_eps", f"every eps must be a finite number >= 0, got {eps!r}"))
    fewest = minimum_n_frames(hparams["n_fft"], hparams["hop_length"])
    if not isinstance(hparams["n_frames"], int) or hparams["n_frames"] < fewest:
        problems.append(
            Problem(
                "hyperparameter n_frames",
                f"must be an integer >= {fewest}, got {hparams['n_frames']!r}: "
                "the centred STFT needs clips longer than half a window",
            )
        )
    timeout = hparams.get("ddp_timeout_minutes")  # absent from output folders older than the key: not set
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
    ):
        problems.append(
            Problem("hyperparameter ddp_timeout_minutes", f"must be a number of minutes > 0, got {timeout!r}")
        )
    step = hparams.get("training_step")
    if hparams.get("select_checkpoint") == "best_noisy_dev" and not getattr(step, "trains_on_noisy_copies_only", False):
        problems.append(
            Problem(
                "hyperparameter select_checkpoint",
                f"best_noisy_dev needs a training step that trains on noisy copies only (no objective), and "
                f"{step!r} does not, so no dev UAR on noisy copies is kept; use best_dev or final",
            )
        )
    if not isinstance(hparams["modules"]["model"], torch.nn.Module):
        problems.append(
            Problem(
                "hyperparameter model",
                f"must be a torch.nn.Module built with !new: (e.g. "
                f"!new:ser_adv_brain.models.CNN4), got {hparams['modules']['model']!r}",
            )
        )
    return problems


def validate_inputs(hparams):
    """Checks the hyperparameters, the three manifests and their audio before training.

    Reads ``train_annotation``, ``valid_annotation``, ``test_annotation``,
    ``save_folder``, ``sample_rate``, ``n_fft``, ``n_classes``,
    ``skip_bad_files`` and the keys of ``hyperparameter_problems``. Run it
    on the main process only (``run_on_main``): it decodes new audio and
    writes the cache.

    Returns
    -------
    dict
        Split -> sorted IDs of the rows to leave out (bad audio, with
        ``skip_bad_files``; otherwise empty).

    Raises
    ------
    DataValidationError
        With every problem found; the full list is also written to
        ``<save_folder>/data_problems.txt``.
    """
    save_folder = hparams["save_folder"]
    problems = hyperparameter_problems(hparams)
    scan = AudioScan(os.path.join(save_folder, "audio_scan.json"))
    manifests, readable = {}, []
    for split in SPLITS:
        path = hparams[f"{split}_annotation"]
        remedy = f"run the data preparation (skip_prep: False) or fix {split}_annotation"
        rows, form_problems = read_manifest(path, split, remedy)
        manifests[split] = (path, rows)
        if not form_problems:
            readable.append(split)
        problems += form_problems
        problems += row_problems(path, split, rows, scan, hparams["sample_rate"], hparams["n_fft"])
    scan.save()

    skipped = {split: set() for split in SPLITS}
    if hparams.get("skip_bad_files", False):
        bad = [problem for problem in problems if problem.skippable]
        problems = [problem for problem in problems if not problem.skippable]
        for problem in bad:
            skipped[problem.split].add(problem.row_id)
        if bad:
            listing = "\n".join(f"  - {problem}" for problem in bad[:MAX_LISTED])
            logger.warning(f"skip_bad_files: leaving out {len(bad)} row(s) with bad audio:\n{listing}")
    # The classes are those of the rows that will be trained on.
    kept = {
        split: (path, [(line, row) for line, row in rows if row.get("ID") not in skipped[split]])
        for split, (path, rows) in manifests.items()
    }
    label_file = os.path.join(save_folder, "label_encoder.txt")
    known_labels = None
    if os.path.isfile(label_file):
        encoder = CategoricalEncoder()
        encoder.load(label_file)
        known_labels = set(encoder.lab2ind)
    problems += label_problems(kept, known_labels, hparams["n_classes"], label_file)
    problems += cross_split_problems(manifests)
    for split in readable:
        path, rows = kept[split]
        if not rows:
            problems.append(
                Problem(
                    path,
                    f"the {split} manifest has no usable rows; the split leaves this set "
                    "empty: give more speakers, another split or fewer bad files",
                )
            )
    report_file = os.path.join(save_folder, "data_problems.txt")
    if problems:
        os.makedirs(save_folder, exist_ok=True)
        with open(report_file, "w", encoding="utf-8") as f:
            f.write("".join(f"{problem}\n" for problem in problems))
        raise DataValidationError(problems, report_file)
    if os.path.exists(report_file):
        os.remove(report_file)  # an earlier run's, now fixed
    return {split: sorted(ids) for split, ids in skipped.items()}
