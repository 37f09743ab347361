"""Data preparation for EmoDB (Burkhardt et al., 2005), the Berlin Database of Emotional Speech.

Download: EmoDB is distributed free of charge for research by its authors
(http://emodb.bilderbar.info/); point ``--data_folder`` at the folder holding its
``.wav`` files (searched recursively, e.g. the ``wav/`` folder of the archive).

File names look like ``03a01Fa.wav``: speaker ``03``, text ``a01``, emotion
letter ``F``, version ``a``. The letters are the German emotion names' initials.
"""

import csv
import glob
import logging
import os
import re

from ser_adv_brain.data.manifests import SPLIT_FILE, manifests_up_to_date, write_split_manifests

logger = logging.getLogger(__name__)

EMOTION_LETTERS = {
    "W": "anger",  # Wut
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}
# The ten actors (the corpus documentation); the names do not carry the gender.
SPEAKER_GENDERS = {
    "03": "m",
    "08": "f",
    "09": "f",
    "10": "m",
    "11": "m",
    "12": "m",
    "13": "f",
    "14": "f",
    "15": "m",
    "16": "f",
}
EMODB_STEM = re.compile(r"^(?P<spk_id>\d\d)(?P<text>[ab]\d\d)(?P<letter>[A-Z])(?P<version>[a-z])$")


def parse_emodb_stem(stem):
    """Parses an EmoDB file stem into its speaker, gender, text, emotion and version.

    Example
    -------
    >>> parse_emodb_stem("03a01Fa")
    {'spk_id': '03', 'gender': 'm', 'text': 'a01', 'emo': 'happiness', 'version': 'a'}
    """
    match = EMODB_STEM.match(stem)
    if match is None:
        raise ValueError(f"{stem!r} is not an EmoDB stem like '03a01Fa' (speaker, text, emotion letter, version).")
    letter, speaker = match["letter"], match["spk_id"]
    if letter not in EMOTION_LETTERS:
        raise ValueError(
            f"{stem!r}: unknown EmoDB emotion letter {letter!r}; known letters are {sorted(EMOTION_LETTERS)}."
        )
    if speaker not in SPEAKER_GENDERS:
        raise ValueError(f"{stem!r}: unknown EmoDB speaker {speaker!r}; EmoDB's are {sorted(SPEAKER_GENDERS)}.")
    return {
        "spk_id": speaker,
        "gender": SPEAKER_GENDERS[speaker],
        "text": match["text"],
        "emo": EMOTION_LETTERS[letter],
        "version": match["version"],
    }


def write_speaker_split_file(path, speakers, test_speakers, valid_speakers):
    """Writes a ``spk_id,split`` CSV: the given test and dev speakers, every other one in train.

    The explicit lists thus go through the same split-file mechanism as a
    user's own ``split_file``.
    """
    test_speakers, valid_speakers = [str(s) for s in test_speakers], [str(s) for s in valid_speakers]
    for name, chosen in (("test_speakers", test_speakers), ("valid_speakers", valid_speakers)):
        unknown = sorted(set(chosen) - set(speakers))
        if unknown:
            raise ValueError(f"{name} names speaker(s) {unknown} absent from the corpus (it has {sorted(speakers)}).")
    both = sorted(set(test_speakers) & set(valid_speakers))
    if both:
        raise ValueError(f"Speaker(s) {both} are in both test_speakers and valid_speakers.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["spk_id", "split"])
        for speaker in sorted(speakers):
            split = "test" if speaker in test_speakers else "valid" if speaker in valid_speakers else "train"
            writer.writerow([speaker, split])
    return path


def prepare_emodb(
    data_folder,
    save_folder,
    split_ratio=(6, 2, 2),
    seed=1234,
    split_file=None,
    test_speakers=None,
    valid_speakers=None,
    include_neutral=True,
    fold=None,
    n_folds=5,
):
    """Writes speaker-independent ``train/valid/test.csv`` manifests for EmoDB.

    Skipped when manifests made with the same options already exist.

    Arguments
    ---------
    data_folder : str
        Holds the EmoDB ``.wav`` files (searched recursively).
    save_folder : str
        Receives the manifests and ``data_summary.md``.
    split_ratio : sequence of 3 numbers
        Speakers in train, valid and test, in proportion (gender-balanced random split).
    seed : int
        Seed of the random speaker split.
    split_file : str or None
        CSV ``spk_id,split`` giving the split instead.
    test_speakers, valid_speakers : list of str or None
        Give both to fix the test and dev speakers; every other speaker trains.
        They are written to ``<save_folder>/speaker_split.csv`` and used as the split file.
    include_neutral : bool
        EmoDB's seven classes include neutral (unlike the paper's DEMoS setup).
    fold, n_folds : int or None, int
        Speaker fold ``fold`` of ``n_folds`` (``ser_adv_brain.data.manifests.fold_split``; with 5 folds one
        woman and one man are tested, the next pair is the dev set); None for the other ways.
    """
    explicit = test_speakers is not None or valid_speakers is not None
    if explicit and (test_speakers is None or valid_speakers is None):
        raise ValueError("Give both test_speakers and valid_speakers (or neither, for a random split).")
    if explicit and split_file:
        raise ValueError(f"Give either split_file ({split_file!r}) or test_speakers/valid_speakers, not both.")
    if explicit and fold is not None:
        raise ValueError(f"Give either fold ({fold}) or test_speakers/valid_speakers, not both (set fold to null).")
    options = {
        "data_folder": os.path.abspath(data_folder),
        "split_ratio": list(split_ratio),
        "seed": seed,
        "split_file": split_file,
        "test_speakers": None if test_speakers is None else [str(s) for s in test_speakers],
        "valid_speakers": None if valid_speakers is None else [str(s) for s in valid_speakers],
        "include_neutral": include_neutral,
        "fold": fold,
        "n_folds": n_folds,
    }
    if manifests_up_to_date(save_folder, options):
        logger.info(f"EmoDB manifests in {save_folder} are up to date, preparation skipped.")
        return
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"EmoDB data_folder {data_folder!r} does not exist.")
    records = []
    for path in sorted(glob.glob(os.path.join(data_folder, "**", "*.wav"), recursive=True)):
        stem = os.path.splitext(os.path.basename(path))[0]
        info = parse_emodb_stem(stem)
        if info["emo"] == "neutral" and not include_neutral:
            continue
        records.append({"ID": stem, "wav": os.path.abspath(path), **info})
    if not records:
        raise ValueError(f"No EmoDB-named .wav files (like 03a01Fa.wav) found under {data_folder!r}.")
    if explicit:
        speakers = {r["spk_id"] for r in records}
        split_file = write_speaker_split_file(
            os.path.join(save_folder, SPLIT_FILE), speakers, test_speakers, valid_speakers
        )
    write_split_manifests(records, save_folder, options, split_ratio, seed, split_file, "EmoDB", fold, n_folds)
