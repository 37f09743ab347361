"""DEMoS stem parsing, speaker-independent splits, manifests, and skipping prepared data."""

import csv
import os

import pytest
import soundfile
from helpers import markdown_rows

from ser_adv_brain.data.manifests import (
    MANIFEST_COLUMNS,
    PAPER_SPLIT_RATIO,
    SPLITS,
    fold_split,
    speaker_folds,
    speaker_independent_split,
    split_sizes,
)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_manifests(folder):
    return {split: read_csv(os.path.join(folder, f"{split}.csv")) for split in SPLITS}


# ---------------------------------------------------------------- stems


@pytest.mark.parametrize(
    "stem, expected",
    [
        ("NP_m_02_rab04b", {"emo": "anger", "spk_id": "02", "gender": "m", "prototypical": False}),
        ("PR_f_61_gio12a", {"emo": "happiness", "spk_id": "61", "gender": "f", "prototypical": True}),
        ("NP_f_10_neu01c", {"emo": "neutral", "spk_id": "10", "gender": "f", "prototypical": False}),
        ("PR_m_33_sor02a", {"emo": "surprise", "spk_id": "33", "gender": "m", "prototypical": True}),
    ],
)
def test_parse_demos_stem(demos_prepare, stem, expected):
    assert demos_prepare.parse_demos_stem(stem) == expected


def test_all_demos_emotion_codes(demos_prepare):
    parsed = {code: demos_prepare.parse_demos_stem(f"NP_m_01_{code}01a")["emo"] for code in demos_prepare.EMOTION_CODES}
    assert parsed == {
        "rab": "anger",
        "dis": "disgust",
        "pau": "fear",
        "col": "guilt",
        "gio": "happiness",
        "tri": "sadness",
        "sor": "surprise",
        "neu": "neutral",
    }


@pytest.mark.parametrize(
    "stem, culprit",
    [
        ("NP_m_02_xyz04b", "xyz"),
        ("XX_m_02_rab04b", "XX_m_02_rab04b"),
        ("NP_q_02_rab04b", "NP_q_02_rab04b"),
        ("NP_m_ab_rab04b", "NP_m_ab_rab04b"),
    ],
)
def test_parse_demos_stem_rejects_other_names(demos_prepare, stem, culprit):
    with pytest.raises(ValueError, match=culprit):
        demos_prepare.parse_demos_stem(stem)


# ---------------------------------------------------------------- split


def test_paper_split_sizes():
    assert split_sizes(68, PAPER_SPLIT_RATIO) == [24, 22, 22]
    assert split_sizes(3, PAPER_SPLIT_RATIO) == [1, 1, 1]
    assert split_sizes(14, PAPER_SPLIT_RATIO) == [5, 5, 4]


def test_split_sizes_follow_the_ratio():
    for n in range(3, 140):
        sizes = split_sizes(n, PAPER_SPLIT_RATIO)
        assert sum(sizes) == n and min(sizes) >= 1, n
        # Largest remainder: each split gets the floor or the ceiling of its exact share.
        for size, share in zip(sizes, PAPER_SPLIT_RATIO):
            assert abs(size - n * share / sum(PAPER_SPLIT_RATIO)) < 1, (n, sizes)


@pytest.mark.parametrize(
    "n, ratio, expected",
    [
        (5, (1, 1, 1), [2, 2, 1]),  # largest remainder, ties to the first split
        (4, (0.5, 0.25, 0.25), [2, 1, 1]),  # any positive ratio, not only integers
        (3, (10, 1, 1), [1, 1, 1]),  # the minimum of one is taken from the large split
        (6, (10, 1, 1), [4, 1, 1]),
        (12, (10, 1, 1), [10, 1, 1]),
        (7, (100, 1, 1), [5, 1, 1]),
        (6, (1, 1, 10, 16), [1, 1, 1, 3]),  # the place comes from the split least below its share
    ],
)
def test_split_sizes_by_hand(n, ratio, expected):
    assert split_sizes(n, ratio) == expected


def test_skewed_ratios_leave_no_split_empty():
    for n in range(3, 40):
        for ratio in ((10, 1, 1), (1, 30, 1), (1, 1, 50), (5, 5, 1)):
            sizes = split_sizes(n, ratio)
            assert sum(sizes) == n and min(sizes) >= 1, (n, ratio, sizes)


def test_default_seed_is_documented():
    genders = corpus_speakers(5, 6)
    assert speaker_independent_split(genders) == speaker_independent_split(genders, seed=1234)
    assert speaker_independent_split(genders) != speaker_independent_split(genders, seed=1235)


def test_split_needs_three_speakers():
    with pytest.raises(ValueError, match="at least 3 speakers, found 2"):
        speaker_independent_split({"01": "m", "02": "f"})
    with pytest.raises(ValueError, match="ratio"):
        split_sizes(5, (1, 0, 1))


def corpus_speakers(n_female, n_male):
    genders = {f"{i:03d}": "f" for i in range(n_female)}
    genders.update({f"{i:03d}": "m" for i in range(n_female, n_female + n_male)})
    return genders


def test_split_is_disjoint_proportional_and_gender_balanced():
    # Many gender mixes, small to twice DEMoS's size, checked exhaustively rather
    # than with hypothesis, which cannot run once speechbrain's lazy modules are imported.
    for n_female in [*range(0, 41, 3), 69, 100]:
        for n_male in [*range(41), 69, 100]:
            check_split(n_female, n_male, seed=n_female * 41 + n_male)


def check_split(n_female, n_male, seed):
    genders = corpus_speakers(n_female, n_male)
    if len(genders) < 3:
        return
    assignment = speaker_independent_split(genders, seed=seed)
    assert set(assignment) == set(genders) and set(assignment.values()) <= set(SPLITS)
    sizes = split_sizes(len(genders), PAPER_SPLIT_RATIO)
    for split, size in zip(SPLITS, sizes):
        members = [s for s, assigned in assignment.items() if assigned == split]
        assert len(members) == size, (n_female, n_male, split)
        # Each split holds the genders in the corpus's proportion, within one speaker.
        females = sum(genders[s] == "f" for s in members)
        assert abs(females - size * n_female / len(genders)) < 1, (n_female, n_male, split, females)


def test_demos_sized_split_is_balanced():
    """The paper's corpus: 68 speakers, 23 f / 45 m -> 24 / 22 / 22 speakers, about 1/3 female each."""
    genders = corpus_speakers(23, 45)
    assignment = speaker_independent_split(genders, seed=1234)
    counts = {(split, g): 0 for split in SPLITS for g in "fm"}
    for speaker, split in assignment.items():
        counts[split, genders[speaker]] += 1
    assert [counts[s, "f"] + counts[s, "m"] for s in SPLITS] == [24, 22, 22]
    assert [counts[s, "f"] for s in SPLITS] in ([8, 7, 8], [8, 8, 7])


def test_split_is_deterministic_in_the_seed():
    genders = corpus_speakers(23, 45)
    assert speaker_independent_split(genders, seed=3) == speaker_independent_split(
        dict(reversed(genders.items())), seed=3
    )
    assert speaker_independent_split(genders, seed=3) != speaker_independent_split(genders, seed=4)


# ---------------------------------------------------------------- speaker folds


@pytest.mark.parametrize("n_female, n_male, n_folds", [(5, 5, 5), (23, 45, 5), (3, 3, 3), (4, 9, 4)])
def test_every_speaker_is_tested_once_and_a_dev_speaker_once_over_the_folds(n_female, n_male, n_folds):
    genders = corpus_speakers(n_female, n_male)
    splits = [fold_split(genders, n_folds, fold) for fold in range(n_folds)]
    for role in ("test", "valid"):
        assert sorted(s for split in splits for s, r in split.items() if r == role) == sorted(genders)
    for split in splits:
        assert set(split) == set(genders)
        for role in ("test", "valid"):  # each gender in its share, within one speaker
            women = sum(genders[s] == "f" for s, r in split.items() if r == role)
            assert n_female // n_folds <= women <= -(-n_female // n_folds)


def test_emodb_folds_are_a_woman_and_a_man_and_fold_0_is_the_former_default_split():
    genders = {
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
    assert speaker_folds(genders, 5) == [["03", "08"], ["09", "10"], ["11", "13"], ["12", "14"], ["15", "16"]]
    first = fold_split(genders, 5, 0)
    assert sorted(s for s, r in first.items() if r == "test") == ["03", "08"]
    assert sorted(s for s, r in first.items() if r == "valid") == ["09", "10"]
    last = fold_split(genders, 5, 4)  # the dev set wraps around to the first fold
    assert sorted(s for s, r in last.items() if r == "valid") == ["03", "08"]
    assert speaker_folds(dict(reversed(genders.items())), 5) == speaker_folds(
        genders, 5
    )  # the IDs decide, not the order


@pytest.mark.parametrize(
    "n_folds, fold, message",
    [
        (2, 0, "n_folds must be an integer >= 3"),
        (5, 5, "fold must be an integer from 0 to n_folds - 1 = 4"),
        (5, -1, "fold must be"),
        (6, 0, r"n_folds=6 leaves fold\(s\) \[5\] without speakers"),
    ],
)
def test_impossible_folds_are_named(n_folds, fold, message):
    with pytest.raises(ValueError, match=message):
        fold_split(corpus_speakers(5, 5), n_folds, fold)


# ---------------------------------------------------------------- manifests


def test_prepare_writes_speaker_disjoint_manifests(demos_prepare, tiny_corpus, tmp_path):
    demos_prepare.prepare_demos(tiny_corpus, str(tmp_path))
    manifests = read_manifests(tmp_path)
    speakers = {split: {r["spk_id"] for r in rows} for split, rows in manifests.items()}
    assert [len(speakers[s]) for s in SPLITS] == [2, 2, 2]  # 6 speakers at 24:22:22
    assert not (
        speakers["train"] & speakers["valid"]
        or speakers["train"] & speakers["test"]
        or speakers["valid"] & speakers["test"]
    )
    for split, rows in manifests.items():
        assert {r["gender"] for r in rows} == {"f", "m"}  # one speaker of each gender per split
        assert len(rows) == 2 * 7 * 2
        assert {r["emo"] for r in rows} == {"anger", "disgust", "fear", "guilt", "happiness", "sadness", "surprise"}
        with open(tmp_path / f"{split}.csv", encoding="utf-8") as f:
            assert tuple(f.readline().strip().split(",")) == MANIFEST_COLUMNS
        for row in rows[:3]:
            info = soundfile.info(row["wav"])
            assert os.path.isabs(row["wav"])
            assert float(row["duration"]) == pytest.approx(info.frames / info.samplerate, abs=1e-3)
            assert demos_prepare.parse_demos_stem(row["ID"])["spk_id"] == row["spk_id"]
    summary = (tmp_path / "data_summary.md").read_text()
    rows = markdown_rows(summary)
    assert ["anger", "4", "4", "4", "12"] in rows
    assert ["Utterances", "28", "28", "28", "84"] in rows
    assert ["Speakers", "2", "2", "2", "6"] in rows
    assert ["Speakers (f)", "1", "1", "1", "3"] in rows


def test_neutral_and_prototypical_options(demos_prepare, tiny_corpus, tmp_path):
    demos_prepare.prepare_demos(tiny_corpus, str(tmp_path / "neu"), include_neutral=True)
    rows = [r for split in read_manifests(tmp_path / "neu").values() for r in split]
    assert sum(r["emo"] == "neutral" for r in rows) == 6 and len(rows) == 90

    # Only PR utterances: give each speaker three per emotion, so one is PR.
    from ser_adv_brain.data.synthetic import generate_synthetic_demos

    corpus = generate_synthetic_demos(
        str(tmp_path / "pr_corpus"),
        n_speakers=3,
        utterances_per_emotion=3,
        neutral_per_speaker=0,
        min_duration=0.2,
        max_duration=0.3,
        seed=2,
    )
    demos_prepare.prepare_demos(corpus, str(tmp_path / "pr"), prototypical_only=True)
    rows = [r for split in read_manifests(tmp_path / "pr").values() for r in split]
    assert len(rows) == 3 * 7 and all(r["ID"].startswith("PR_") for r in rows)


def test_split_file_is_honoured(demos_prepare, tiny_corpus, tmp_path):
    wanted = {"01": "test", "02": "test", "03": "train", "04": "valid", "05": "train", "06": "train"}
    split_file = tmp_path / "split.csv"
    split_file.write_text("spk_id,split\n" + "".join(f"{s},{p}\n" for s, p in wanted.items()))
    demos_prepare.prepare_demos(tiny_corpus, str(tmp_path / "out"), split_file=str(split_file))
    for split, rows in read_manifests(tmp_path / "out").items():
        assert {r["spk_id"] for r in rows} == {s for s, p in wanted.items() if p == split}


@pytest.mark.parametrize(
    "content, message",
    [
        ("spk_id,split\n01,train\n02,valid\n03,test\n", r"no split to speaker\(s\) \['04', '05', '06'\]"),
        ("spk_id,split\n01,dev\n", "split must be one of"),
        ("speaker,split\n01,train\n", "lacks column"),
    ],
)
def test_bad_split_files_are_named(demos_prepare, tiny_corpus, tmp_path, content, message):
    split_file = tmp_path / "split.csv"
    split_file.write_text(content)
    with pytest.raises(ValueError, match=message):
        demos_prepare.prepare_demos(tiny_corpus, str(tmp_path / "out"), split_file=str(split_file))


def test_preparation_is_skipped_when_up_to_date(demos_prepare, tiny_corpus, tmp_path):
    out = str(tmp_path / "out")
    demos_prepare.prepare_demos(tiny_corpus, out, seed=1)
    train_csv = os.path.join(out, "train.csv")
    first = os.stat(train_csv).st_mtime_ns
    os.utime(train_csv, ns=(first - 10**9, first - 10**9))  # make a rewrite visible
    demos_prepare.prepare_demos(tiny_corpus, out, seed=1)
    assert os.stat(train_csv).st_mtime_ns == first - 10**9
    # Other options invalidate the manifests.
    demos_prepare.prepare_demos(tiny_corpus, out, seed=2)
    assert os.stat(train_csv).st_mtime_ns != first - 10**9


def test_missing_or_empty_data_folder(demos_prepare, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        demos_prepare.prepare_demos(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .wav files"):
        demos_prepare.prepare_demos(str(tmp_path / "empty"), str(tmp_path / "out"))
