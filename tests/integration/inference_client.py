"""What a user of an exported interface does, in a fresh process; ``tests/integration/test_inference.py`` checks it.

Usage: ``python tests/integration/inference_client.py INTERFACE_FOLDER SAVEDIR RESULTS.pt EPS WAV [WAV ...]``

Loads the folder with ``EmotionRecognizer.from_hparams`` and with SpeechBrain's
``foreign_class``, classifies each file, each file's raw samples (any rate and
channel count) and all files as one padded batch, attacks each file with FGSM
at EPS, and saves everything to RESULTS.pt.
"""

import os
import sys

import soundfile
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.inference.interfaces import foreign_class

from ser_adv_brain.interface import EmotionRecognizer


def raw_classification(recognizer, wav):
    """classify_batch on the file's samples as stored: ``[1, time(, channels)]`` at the file's rate."""
    samples, rate = soundfile.read(wav, dtype="float32")
    return recognizer.classify_batch(torch.from_numpy(samples).unsqueeze(0), sample_rate=rate)


def main(folder, savedir, results_path, eps, wavs):
    recognizer = EmotionRecognizer.from_hparams(source=folder, savedir=os.path.join(savedir, "from_hparams"))
    foreign = foreign_class(
        source=folder,
        pymodule_file="custom_interface.py",
        classname="EmotionRecognizer",
        savedir=os.path.join(savedir, "foreign_class"),
    )
    signals = [recognizer.load_audio(wav) for wav in wavs]
    padded = PaddedBatch([{"sig": signal} for signal in signals]).sig
    results = {
        "files": [recognizer.classify_file(wav) for wav in wavs],
        "foreign_class": [foreign.classify_file(wav) for wav in wavs],
        "padded_batch": recognizer.classify_batch(padded.data, padded.lengths),
        "raw_samples": [raw_classification(recognizer, wav) for wav in wavs],
        "attacks": [recognizer.attack_batch(signal, eps=eps) for signal in signals],
        "attacks_eps0": [recognizer.attack_batch(signal, eps=0.0)[0] for signal in signals],
    }
    torch.save(results, results_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5:])
