"""Datasets for training and evaluation: SpeechBrain ``DynamicItemDataset`` pipelines over CSV manifests."""

import os

import speechbrain as sb
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder

from ser_adv_brain.audio.loading import fix_length, frames_to_samples, load_audio


def audio_pipeline(sample_rate, num_samples, random_crop):
    """The ``wav -> sig`` pipeline: load, mono, resample, fixed length (random or centred crop)."""

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def pipeline(wav):
        return fix_length(load_audio(wav, sample_rate), num_samples, random_crop=random_crop)

    return pipeline


SPLITS = ("train", "valid", "test")


def manifests_of(hparams):
    """Split -> the manifest the yaml names for it (``<split>_annotation``)."""
    return {split: hparams[f"{split}_annotation"] for split in SPLITS}


def dataio_prep(hparams, manifests, n_frames, exclude=None):
    """Builds the train / valid / test datasets and the label encoder from the manifests.

    Every clip becomes ``n_frames`` frames long: randomly cropped in training,
    centred in evaluation, tiled when shorter.

    Arguments
    ---------
    hparams : dict
        ``sample_rate``, ``hop_length``, ``n_classes``, ``save_folder`` (the label encoder's file).
    manifests : dict
        Split -> CSV manifest.
    n_frames : int
    exclude : dict or None
        Split -> IDs of rows to leave out (the bad files ``validate_inputs`` skips).

    Returns
    -------
    datasets : dict
        ``"train"``, ``"valid"``, ``"test"`` -> ``DynamicItemDataset`` with
        ``id``, ``sig`` and ``emo_encoded``.
    label_encoder : CategoricalEncoder
    """
    num_samples = frames_to_samples(n_frames, hparams["hop_length"])
    label_encoder = CategoricalEncoder()

    @sb.utils.data_pipeline.takes("emo")
    @sb.utils.data_pipeline.provides("emo", "emo_encoded")
    def label_pipeline(emo):
        yield emo
        yield label_encoder.encode_label_torch(emo)

    datasets = {}
    for split, annotation in manifests.items():
        datasets[split] = DynamicItemDataset.from_csv(
            csv_path=annotation,
            dynamic_items=[
                audio_pipeline(hparams["sample_rate"], num_samples, random_crop=split == "train"),
                label_pipeline,
            ],
            output_keys=["id", "sig", "emo_encoded"],
        )
        excluded = set((exclude or {}).get(split, ()))
        if excluded:
            datasets[split] = datasets[split].filtered_sorted(key_test={"id": lambda id_: id_ not in excluded})

    # Labels are indexed from the training set; a saved encoder keeps the order across runs.
    label_encoder.load_or_create(
        path=os.path.join(hparams["save_folder"], "label_encoder.txt"),
        from_didatasets=[datasets["train"]],
        output_key="emo",
    )
    if len(label_encoder) != hparams["n_classes"]:
        raise ValueError(
            f"The training manifest {manifests['train']} has {len(label_encoder)} emotion "
            f"classes {sorted(label_encoder.lab2ind)}, but n_classes is {hparams['n_classes']}."
        )
    # Declares the class count the model was built for, so the encoder checks it at every use.
    label_encoder.expect_len(hparams["n_classes"])
    return datasets, label_encoder
