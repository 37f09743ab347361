#!/usr/bin/env python3
"""Recipe: speech emotion recognition on EmoDB, with FGSM attacks and adversarial training.

Implements Ren et al., ICASSP 2020, on real German
speech (Burkhardt et al., "A Database of German Emotional Speech", Interspeech 2005).

To run:
    python recipes/EmoDB/train.py recipes/EmoDB/hparams/cnn4_vanilla.yaml --data_folder=/path/to/emodb/wav
"""

import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from ser_adv_brain.recipe import train_and_evaluate

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
from emodb_prepare import prepare_emodb  # noqa: E402

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    if not hparams["skip_prep"]:
        run_on_main(
            prepare_emodb,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["output_folder"],
                "split_ratio": hparams["split_ratio"],
                "seed": hparams["seed"],
                "split_file": hparams["split_file"],
                "test_speakers": hparams["test_speakers"],
                "valid_speakers": hparams["valid_speakers"],
            },
        )

    train_and_evaluate(hparams, run_opts, corpus=None if hparams["skip_prep"] else "EmoDB")
    if torch.distributed.is_initialized():
        # An undestroyed gloo group can abort the process at interpreter exit.
        torch.distributed.destroy_process_group()
