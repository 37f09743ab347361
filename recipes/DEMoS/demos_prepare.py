"""Data preparation for DEMoS (Parada-Cabaleiro et al., 2019), Italian emotional speech.

Download: DEMoS is distributed under an EULA by its authors; once granted,
point ``--data_folder`` at the folder holding ``DEMOS/`` and ``NEU/``.

File stems look like ``NP_m_02_rab04b``: ``NP``/``PR`` (non-prototypical /
prototypical), gender letter, two-digit speaker (``stem[-9:-7]``), three-letter
emotion code (``stem[-6:-3]``), utterance tag.
"""

import glob
import logging
import os
import re

from ser_adv_brain.data.manifests import PAPER_SPLIT_RATIO, manifests_up_to_date, write_split_manifests
from ser_adv_brain.data.validation import DataValidationError, Problem

logger = logging.getLogger(__name__)

EMOTION_CODES = {
    "rab": "anger",
    "dis": "disgust",
    "pau": "fear",
    "col": "guilt",
    "gio": "happiness",
    "tri": "sadness",
    "sor": "surprise",
    "neu": "neutral",
}
# ASCII only: str.isdigit() and \d also take digits of other scripts ("٣").
STEM_PATTERN = re.compile(r"(NP|PR)_[mf]_[0-9]{2}_[a-z]{3}[0-9]{2}[a-z]", re.ASCII | re.IGNORECASE)


def parse_demos_stem(stem):
    """Parses a DEMoS file stem into its emotion, speaker, gender and prototypicality.

    Example
    -------
    >>> parse_demos_stem("NP_m_02_rab04b")
    {'emo': 'anger', 'spk_id': '02', 'gender': 'm', 'prototypical': False}
    """
    code = stem[-6:-3]
    if code not in EMOTION_CODES:
        raise ValueError(
            f"{stem!r}: unknown DEMoS emotion code {code!r} (stem[-6:-3]); known codes are {sorted(EMOTION_CODES)}."
        )
    if not STEM_PATTERN.fullmatch(stem):
        raise ValueError(f"{stem!r} is not a DEMoS stem like 'NP_m_02_rab04b'.")
    speaker, gender, prefix = stem[-9:-7], stem[-11:-10].lower(), stem[:2].upper()
    return {"emo": EMOTION_CODES[code], "spk_id": speaker, "gender": gender, "prototypical": prefix == "PR"}


def prepare_demos(
    data_folder,
    save_folder,
    split_ratio=PAPER_SPLIT_RATIO,
    seed=1234,
    split_file=None,
    include_neutral=False,
    prototypical_only=False,
    skip_bad_files=False,
    fold=None,
    n_folds=5,
):
    """Writes speaker-independent ``train/valid/test.csv`` manifests for DEMoS.

    Skipped when manifests made with the same options already exist.

    Arguments
    ---------
    data_folder : str
        Holds ``DEMOS/*.wav`` and ``NEU/*.wav`` (searched recursively).
    save_folder : str
        Receives the manifests and ``data_summary.md``.
    split_ratio : sequence of 3 numbers
        Speakers in train, valid and test, in proportion (the paper's 24:22:22).
    seed : int
        Seed of the speaker split.
    split_file : str or None
        CSV ``spk_id,split`` giving the split instead.
    include_neutral : bool
        The paper excludes the neutral class (7 emotions).
    prototypical_only : bool
        Keep only the prototypical (``PR``) utterances.
    skip_bad_files : bool
        Leave out ``.wav`` files whose names are not DEMoS stems, with a
        warning, instead of stopping.
    fold, n_folds : int or None, int
        Speaker fold ``fold`` of ``n_folds`` (``ser_adv_brain.data.manifests.fold_split``) instead of the
        paper's split; None for the paper's.

    Raises
    ------
    DataValidationError
        Listing every file name that is not a DEMoS stem (unknown emotion
        code, malformed), or saying that the folder has none.
    """
    options = {
        "data_folder": os.path.abspath(data_folder),
        "split_ratio": list(split_ratio),
        "seed": seed,
        "split_file": split_file,
        "include_neutral": include_neutral,
        "prototypical_only": prototypical_only,
        "skip_bad_files": skip_bad_files,
        "fold": fold,
        "n_folds": n_folds,
    }
    if manifests_up_to_date(save_folder, options):
        logger.info(f"DEMoS manifests in {save_folder} are up to date, preparation skipped.")
        return
    where = "point --data_folder at the folder holding DEMoS's DEMOS/ and NEU/"
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"DEMoS data_folder {data_folder!r} does not exist; {where}.")
    paths = sorted(glob.glob(os.path.join(data_folder, "**", "*.wav"), recursive=True))
    if not paths:
        raise DataValidationError([Problem(data_folder, f"contains no .wav files (searched recursively); {where}")])
    records, problems = [], []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            info = parse_demos_stem(stem)
        except ValueError as error:
            problems.append(Problem(path, f"{error} Rename or remove the file.", skippable=True))
            continue
        if info["emo"] == "neutral" and not include_neutral:
            continue
        if prototypical_only and not info["prototypical"]:
            continue
        records.append({"ID": stem, "wav": os.path.abspath(path), **info})
    if len(problems) == len(paths):
        problems.insert(
            0,
            Problem(
                data_folder, f"none of its {len(paths)} .wav files has a DEMoS name like NP_m_02_rab04b.wav; {where}"
            ),
        )
    elif problems and skip_bad_files:
        logger.warning(
            f"skip_bad_files: leaving out {len(problems)} file(s) without a DEMoS name: "
            + ", ".join(os.path.basename(problem.where) for problem in problems)
        )
        problems = []
    if problems:
        raise DataValidationError(problems)
    if not records:
        raise DataValidationError(
            [Problem(data_folder, "no utterance is left with these options (include_neutral, prototypical_only)")]
        )
    write_split_manifests(records, save_folder, options, split_ratio, seed, split_file, "DEMoS", fold, n_folds)
