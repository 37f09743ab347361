"""The label encoder a recipe builds knows its class count: no warning on a newcomer's first run."""

import logging

from ser_adv_brain.data.dataio import dataio_prep, manifests_of


def test_label_encoder_expects_the_class_count(tiny_hparams, caplog):
    """SpeechBrain warns "expect_len was never called" at the first encoding unless the recipe declares it."""
    hparams = tiny_hparams("cnn4_single")
    datasets, encoder = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    with caplog.at_level(logging.WARNING):
        datasets["train"][0]  # encodes a label, as the first training batch does
        encoder.decode_ndim([0])
    assert encoder.expected_len == 7
    assert not [record for record in caplog.records if "expect_len" in record.getMessage()]
