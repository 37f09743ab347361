"""Corpus-independent data preparation: speaker-independent splits and SpeechBrain CSV manifests.

A corpus recipe (``recipes/<corpus>/<corpus>_prepare.py``) only parses its own
file names into records (``ID, wav, emo, spk_id, gender``); everything after
that -- the split, the manifests, the summary table -- is shared here.
"""

import collections
import csv
import itertools
import json
import logging
import os
import random

import soundfile

from ser_adv_brain.tables import markdown_table

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
PAPER_SPLIT_RATIO = (24, 22, 22)  # DEMoS speakers in train / dev / test (Ren et al., 2020)
MANIFEST_COLUMNS = ("ID", "duration", "wav", "emo", "spk_id", "gender")
SPLIT_FILE = "speaker_split.csv"  # beside the manifests: which split each speaker went to


def split_sizes(n_items, ratio):
    """Largest-remainder apportionment of ``n_items`` over ``ratio``, at least one each."""
    if n_items < len(ratio):
        raise ValueError(
            f"A {len(ratio)}-way speaker-independent split needs at least {len(ratio)} speakers, found {n_items}."
        )
    if any(r <= 0 for r in ratio):
        raise ValueError(f"Every split ratio must be > 0, got {tuple(ratio)}")
    quotas = [n_items * r / sum(ratio) for r in ratio]
    sizes = [max(1, int(q)) for q in quotas]
    order = sorted(range(len(ratio)), key=lambda i: sizes[i] - quotas[i])
    while sum(sizes) < n_items:
        i = order.pop(0)
        sizes[i] += 1
        order.append(i)
    while sum(sizes) > n_items:  # only when the minimum of one forced an extra
        # Taken from a split that keeps at least one (a forced 1 has the largest excess).
        i = max((j for j in range(len(sizes)) if sizes[j] > 1), key=lambda j: sizes[j] - quotas[j])
        sizes[i] -= 1
    return sizes


def largest_remainder(total, weights):
    """Integer counts summing to ``total`` in proportion to ``weights``, each its share's floor or ceiling.

    Example
    -------
    >>> largest_remainder(7, [5, 5, 4])
    [3, 2, 2]
    """
    quotas = [total * w / sum(weights) for w in weights]
    counts = [int(q) for q in quotas]
    for i in sorted(range(len(quotas)), key=lambda i: counts[i] - quotas[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts


def speaker_independent_split(speaker_genders, ratio=PAPER_SPLIT_RATIO, seed=1234):
    """Assigns every speaker to one split, in ``ratio`` proportions, balanced by gender.

    Arguments
    ---------
    speaker_genders : dict
        Speaker ID -> gender letter.
    ratio : sequence of 3 numbers
        Relative speaker counts of train, valid and test (the paper's 24:22:22).
    seed : int
        The split is a deterministic function of the speakers and the seed.

    Returns
    -------
    dict
        Speaker ID -> ``"train"``, ``"valid"`` or ``"test"``.
    """
    sizes = split_sizes(len(speaker_genders), ratio)
    rng = random.Random(seed)
    by_gender = collections.defaultdict(list)
    for speaker in sorted(speaker_genders):
        by_gender[speaker_genders[speaker]].append(speaker)
    # Each gender takes its share of every split's places still free (largest
    # remainder), so every split holds the genders in the corpus's proportion
    # within one speaker; the last gender fills what is left exactly.
    free = list(sizes)
    assignment = {}
    for gender in sorted(by_gender):
        speakers = by_gender[gender]
        rng.shuffle(speakers)
        counts = largest_remainder(len(speakers), free)
        dealt = iter(speakers)
        for split, count in zip(SPLITS, counts):
            assignment.update((speaker, split) for speaker in itertools.islice(dealt, count))
        free = [f - c for f, c in zip(free, counts)]
    return assignment


def speaker_folds(speaker_genders, n_folds):
    """Deals the speakers into ``n_folds`` disjoint groups, each gender in turn from the first group.

    Within a gender the speakers go in sorted order to groups 0, 1, ...,
    ``n_folds - 1``, 0, ...: a deterministic function of the speaker IDs, with
    every group holding each gender's speakers in the corpus's proportion
    within one. EmoDB's 5 women and 5 men make 5 groups of one woman and one man.

    Example
    -------
    >>> speaker_folds({"03": "m", "08": "f", "09": "f", "10": "m", "11": "m", "13": "f"}, 3)
    [['03', '08'], ['09', '10'], ['11', '13']]
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 3:
        raise ValueError(f"n_folds must be an integer >= 3 (a test, a dev and a training group), got {n_folds!r}")
    by_gender = collections.defaultdict(list)
    for speaker in sorted(speaker_genders):
        by_gender[speaker_genders[speaker]].append(speaker)
    groups = [[] for _ in range(n_folds)]
    for gender in sorted(by_gender):
        for index, speaker in enumerate(by_gender[gender]):
            groups[index % n_folds].append(speaker)
    empty = [index for index, group in enumerate(groups) if not group]
    if empty:
        raise ValueError(
            f"n_folds={n_folds} leaves fold(s) {empty} without speakers: the corpus has "
            f"{len(speaker_genders)} speakers, at most {max(map(len, by_gender.values()))} of one gender."
        )
    return [sorted(group) for group in groups]


def fold_split(speaker_genders, n_folds, fold):
    """Speaker fold ``fold`` of ``n_folds``: its group is tested, the next one (cyclically) is the dev set,
    the others train (``speaker_folds``), so that over the folds every speaker is tested once.

    Returns
    -------
    dict
        Speaker ID -> ``"train"``, ``"valid"`` or ``"test"``.

    Example
    -------
    >>> fold_split({"03": "m", "08": "f", "09": "f", "10": "m", "11": "m", "13": "f"}, 3, 2)
    {'03': 'valid', '08': 'valid', '09': 'train', '10': 'train', '11': 'test', '13': 'test'}
    """
    groups = speaker_folds(speaker_genders, n_folds)
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
        raise ValueError(f"fold must be an integer from 0 to n_folds - 1 = {n_folds - 1}, got {fold!r}")
    roles = {fold: "test", (fold + 1) % n_folds: "valid"}
    return {speaker: roles.get(index, "train") for index, group in enumerate(groups) for speaker in group}


def read_split_file(path):
    """Reads a user-given speaker split: a CSV with columns ``spk_id`` and ``split``."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"spk_id", "split"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"Split file {path} lacks column(s) {sorted(missing)}; it needs spk_id,split.")
        assignment = {}
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise ValueError(f"{path}, line {line}: split must be one of {SPLITS}, got {row['split']!r}")
            assignment[row["spk_id"]] = row["split"]
    return assignment


def audio_duration(path):
    """Duration in seconds from the file header (the audio itself is not decoded).

    NaN if the header cannot be read: such a file is reported, with all
    other problems, by ``ser_adv_brain.data.validation`` before training.
    """
    try:
        info = soundfile.info(path)
    except soundfile.SoundFileError:
        return float("nan")
    return info.frames / info.samplerate


def write_manifest(path, records):
    """Writes a SpeechBrain CSV manifest with the columns ``MANIFEST_COLUMNS``."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow(record)


def summary_table(split_records):
    """A markdown table like the paper's DEMoS table: utterances per class and split, speakers, genders."""
    emotions = sorted({r["emo"] for records in split_records.values() for r in records})

    def row(name, values):
        return [name, *values, sum(values)]

    rows = [row(emotion, [sum(r["emo"] == emotion for r in split_records[s]) for s in SPLITS]) for emotion in emotions]
    rows.append(row("Utterances", [len(split_records[s]) for s in SPLITS]))
    speakers = {s: {(r["spk_id"], r["gender"]) for r in split_records[s]} for s in SPLITS}
    rows.append(row("Speakers", [len(speakers[s]) for s in SPLITS]))
    for gender in sorted({g for s in SPLITS for _, g in speakers[s]}):
        rows.append(row(f"Speakers ({gender})", [sum(g == gender for _, g in speakers[s]) for s in SPLITS]))
    return markdown_table(rows, ["", *SPLITS, "Sum"]) + "\n"


def manifests_up_to_date(save_folder, options):
    """True if the manifests exist and were written with the same options."""
    opts_file = os.path.join(save_folder, "prepare_options.json")
    if not all(os.path.isfile(os.path.join(save_folder, f"{s}.csv")) for s in SPLITS):
        return False
    if not os.path.isfile(opts_file):
        return False
    with open(opts_file, encoding="utf-8") as f:
        return json.load(f) == json.loads(json.dumps(options))


def write_split_manifests(
    records,
    save_folder,
    options,
    ratio=PAPER_SPLIT_RATIO,
    seed=1234,
    split_file=None,
    title="corpus",
    fold=None,
    n_folds=5,
):
    """Splits ``records`` by speaker; writes ``{train,valid,test}.csv``, ``speaker_split.csv`` and ``data_summary.md``.

    Arguments
    ---------
    records : list of dict
        One per utterance, with ``ID, wav, emo, spk_id, gender`` (``duration`` is filled in).
    save_folder : str
    options : dict
        The options the manifests were made with; stored so that a rerun with
        the same options skips, and one with other options prepares anew.
    ratio, seed :
        See ``speaker_independent_split``.
    split_file : str or None
        A CSV (``spk_id,split``) to use instead of a random split.
    title : str
        Names the corpus in the summary.
    fold, n_folds : int or None, int
        Speaker fold ``fold`` of ``n_folds`` (``fold_split``) instead of a random split.
    """
    speakers = {r["spk_id"]: r["gender"] for r in records}
    if split_file and fold is not None:
        raise ValueError(f"Give either split_file ({split_file!r}) or fold ({fold}), not both.")
    if split_file:
        assignment = read_split_file(split_file)
        unknown = sorted(set(speakers) - set(assignment))
        if unknown:
            raise ValueError(f"Split file {split_file} assigns no split to speaker(s) {unknown}.")
    elif fold is not None:
        assignment = fold_split(speakers, n_folds, fold)
    else:
        assignment = speaker_independent_split(speakers, ratio, seed)
    split_records = {s: [] for s in SPLITS}
    for record in sorted(records, key=lambda r: r["ID"]):
        record.setdefault("duration", f"{audio_duration(record['wav']):.3f}")
        split_records[assignment[record["spk_id"]]].append(record)
    empty = [s for s in SPLITS if not split_records[s]]
    if empty:
        raise ValueError(
            f"The speaker split leaves {empty} without any utterance; give more speakers or another split."
        )
    os.makedirs(save_folder, exist_ok=True)
    for split in SPLITS:
        write_manifest(os.path.join(save_folder, f"{split}.csv"), split_records[split])
    with open(os.path.join(save_folder, SPLIT_FILE), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["spk_id", "split"])
        writer.writerows(sorted(assignment.items()))
    summary = summary_table(split_records)
    how = f"speaker fold {fold} of {n_folds}" if fold is not None else "speaker-independent split"
    with open(os.path.join(save_folder, "data_summary.md"), "w", encoding="utf-8") as f:
        f.write(f"# {title}: {how}\n\n{summary}")
    with open(os.path.join(save_folder, "prepare_options.json"), "w", encoding="utf-8") as f:
        json.dump(options, f, indent=1, sort_keys=True)
    logger.info(f"Wrote {title} manifests to {save_folder}:\n{summary}")
    return split_records
