"""2-process DDP (gloo, CPU) keeps the ranks identical for each training mode of the defences issue.

One torchrun launch (``tests/ddp_probe.py``) runs the DEMoS recipe once per mode,
one after the other in the same two processes, one epoch each, after a 2-step
warm-up: the noise baselines, PGD-k, fast and TRADES training. Each mode must
all-reduce once per optimiser step and leave both ranks with the same modules.
"""

import pytest

from test_ddp import FLAGS, assert_ranks_agree, corpus, launch, read_log  # noqa: F401 (corpus: a fixture)

# mode -> the yaml file and its flags (PGD-2 keeps the iterative attacks cheap)
MODES = {
    "raw_noise": ("hparams/cnn4_raw_noise.yaml",),
    "logmel_noise": ("hparams/cnn4_logmel_noise.yaml",),
    "pgd": ("hparams/cnn4_pgd.yaml", "--warmup_steps=2", "--training_steps=2"),
    "fast": ("hparams/cnn4_fast.yaml", "--warmup_steps=2", "--attack_labels=target", "--attack_mode=train"),
    # The KL couples the branches: real and fake go through fit_batch's one backward.
    "trades": ("hparams/cnn4_trades.yaml", "--warmup_steps=2", "--training_steps=2"),
}


# The suite cut to one FGSM budget: these runs check the training step, not the evaluation.
SMALL_SUITE = ["--attack_suite=\n  - !new:ser_adv_brain.attacks.FGSM\n      eps: 0.1", "--suite_budgets={features_linf: [0.1]}"]


@pytest.fixture(scope="module")
def modes_run(tmp_path_factory, corpus):  # noqa: F811
    tmp = tmp_path_factory.mktemp("modes")
    runs = [
        (hparams_file, [*FLAGS, *SMALL_SUITE, *flags, f"--data_folder={corpus}", f"--output_folder={tmp / name}", "--number_of_epochs=1"])
        for name, (hparams_file, *flags) in MODES.items()
    ]
    records = launch(str(tmp / "probe"), runs)
    return {name: {"out": str(tmp / name), "ranks": ranks} for name, ranks in zip(MODES, records)}


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_training_mode_keeps_the_ranks_identical(name, modes_run):
    result = modes_run[name]
    assert_ranks_agree(result["ranks"])
    header = read_log(result["out"])[0]
    assert ("train kl:" if name == "trades" else "train fake_loss:") in header
