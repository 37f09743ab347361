"""Datasets from CSV manifests: fixed-length 16 kHz mono signals and encoded labels, for any corpus."""

import csv
import os

import numpy as np
import pytest
import soundfile
import torch
from helpers import RecipeBrain
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.encoder import CategoricalEncoder

from ser_adv_brain.audio.loading import frames_to_samples
from ser_adv_brain.data.dataio import dataio_prep, manifests_of
from ser_adv_brain.training.brain import build_brain


def test_datasets_from_demos_manifests(tiny_hparams):
    hparams = tiny_hparams("cnn4_single")
    datasets, encoder = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    assert {split: len(ds) for split, ds in datasets.items()} == {"train": 28, "valid": 28, "test": 28}
    assert len(encoder) == 7
    item = datasets["valid"][0]
    assert item["sig"].shape == (frames_to_samples(32, 256),)
    assert 0 <= int(item["emo_encoded"]) < 7
    # Evaluation crops are centred (the same every time); training crops are random.
    assert all(torch.equal(datasets["valid"][i]["sig"], datasets["valid"][i]["sig"]) for i in range(5))
    torch.manual_seed(0)
    assert any(not torch.equal(datasets["train"][i]["sig"], datasets["train"][i]["sig"]) for i in range(5))
    # The label order is saved, so a rerun (or a resumed run) keeps it: a saved order other than
    # the one the training set gives is the one used.
    saved = CategoricalEncoder()
    saved.update_from_iterable(sorted(encoder.lab2ind, key=encoder.lab2ind.get, reverse=True))
    saved.save(os.path.join(hparams["save_folder"], "label_encoder.txt"))
    datasets, again = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    assert again.lab2ind == saved.lab2ind != encoder.lab2ind
    item = datasets["valid"][0]
    assert int(item["emo_encoded"]) == saved.lab2ind[datasets["valid"].data[item["id"]]["emo"]]


def test_class_count_mismatch_is_named(tiny_hparams):
    with pytest.raises(ValueError, match="n_classes is 5"):
        hparams = tiny_hparams("cnn4_single", n_classes=5)
        dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])


def test_any_corpus_given_as_manifests_trains_the_same_way(tiny_hparams, tmp_path):
    """Other names, 3 emotions, 22.05 kHz stereo audio: loaded as 16 kHz mono, and a training step runs."""
    rng = np.random.default_rng(0)
    manifests = {}
    for split, speakers in (("train", ["a", "b"]), ("valid", ["c"]), ("test", ["d"])):
        rows = []
        for speaker in speakers:
            for emotion in ("calm", "angry", "sad"):
                path = str(tmp_path / f"{speaker}-{emotion}.flac")
                soundfile.write(path, 0.1 * rng.normal(size=(11025, 2)), 22050)
                rows.append({"ID": f"{speaker}-{emotion}", "wav": path, "emo": emotion, "spk_id": speaker})
        manifests[split] = str(tmp_path / f"{split}.csv")
        with open(manifests[split], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["ID", "wav", "emo", "spk_id"])
            writer.writeheader()
            writer.writerows(rows)
    hparams = tiny_hparams(
        "cnn4_vanilla",
        n_classes=3,
        train_annotation=manifests["train"],
        valid_annotation=manifests["valid"],
        test_annotation=manifests["test"],
    )
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    assert datasets["test"][0]["sig"].shape == (frames_to_samples(32, 256),)
    brain = build_brain(hparams, {"device": "cpu"}, RecipeBrain)
    brain.fit_normalizer(datasets["train"], hparams["test_dataloader_options"])
    brain.on_fit_start()
    assert torch.isfinite(brain.fit_batch(next(iter(make_dataloader(datasets["train"], batch_size=6)))))
