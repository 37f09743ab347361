#!/usr/bin/env python3
"""Recipe: speech emotion recognition on DEMoS, with FGSM attacks and adversarial training.

Implements Ren et al., ICASSP 2020.

To run (without --data_folder it trains on a built-in SYNTHETIC DEMoS-shaped corpus):
    python recipes/DEMoS/train.py hparams/vgg16_vanilla.yaml --data_folder=/path/to/DEMoS

On several GPUs:
    torchrun --nproc_per_node=4 recipes/DEMoS/train.py hparams/vgg16_vanilla.yaml --data_folder=...
"""

import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.logger import get_logger

from ser_adv_brain.recipe import train_and_evaluate
from ser_adv_brain.synthetic import generate_synthetic_demos

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
from demos_prepare import prepare_demos  # noqa: E402

logger = get_logger(__name__)

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

    data_folder = hparams["data_folder"]
    corpus = None if hparams["skip_prep"] else "DEMoS"  # what the model card describes
    if data_folder is None and not hparams["skip_prep"]:
        corpus = "synthetic"
        data_folder = os.path.join(hparams["output_folder"], "synthetic_demos")
        logger.info(f"No --data_folder given: training on the built-in SYNTHETIC corpus in {data_folder}")
        run_on_main(generate_synthetic_demos, kwargs={"folder": data_folder, **hparams["synthetic_corpus"]})
    if not hparams["skip_prep"]:
        run_on_main(
            prepare_demos,
            kwargs={
                "data_folder": data_folder,
                "save_folder": hparams["output_folder"],
                "split_ratio": hparams["split_ratio"],
                "seed": hparams["seed"],
                "split_file": hparams["split_file"],
                "prototypical_only": hparams["prototypical_only"],
                "skip_bad_files": hparams["skip_bad_files"],
            },
        )

    train_and_evaluate(hparams, run_opts, corpus)
    if torch.distributed.is_initialized():
        # An undestroyed gloo group can abort the process at interpreter exit.
        torch.distributed.destroy_process_group()
