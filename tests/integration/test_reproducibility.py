"""The same seed and configuration on CPU give identical metrics and parameters, for every shipped yaml,
and a run killed mid-epoch resumes to those very results."""

import signal

import pytest

import helpers


def test_same_seed_same_results(reference_run, resume_corpus, tmp_path):
    """Two runs of the recipe, in fresh processes: the same logs, robustness table and final parameters."""
    again = helpers.completed_run(tmp_path / "again", resume_corpus)
    first, second = helpers.run_outcome(reference_run), helpers.run_outcome(again)
    helpers.assert_same_outcome(first, second)
    assert "epoch: 3" in first["train_log"] and "real_loss" in first["train_log"]  # it did train, adversarially


# cnn4_vanilla.yaml is the reference run above (test_faults.py kills it at four more points).
OTHER_YAMLS = [
    *(f"{model}_{kind}.yaml" for model in ("cnn4", "vgg16", "resnet50") for kind in ("single", "vanilla", "similarity")
      if (model, kind) != ("cnn4", "vanilla")),
    *(f"recipes/EmoDB/hparams/cnn4_{kind}.yaml" for kind in ("single", "vanilla", "similarity")),
]


@pytest.mark.parametrize("yaml", OTHER_YAMLS)
def test_every_yaml_repeats_and_resumes_exactly(yaml, resume_corpus, tmp_path):
    """Killed right after the first step of epoch 2 (one intra-epoch checkpoint a step), then resumed:
    the same logs, robustness table and parameters as an uninterrupted run with the same seed."""
    data = helpers.EMODB_SAMPLES if yaml.startswith("recipes/EmoDB") else resume_corpus
    reference = helpers.completed_run(tmp_path / "reference", data, hparams_file=yaml)
    output = tmp_path / "killed"
    killed = helpers.run_training(output, data, hparams_file=yaml, kill="after:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = helpers.run_training(output, data, hparams_file=yaml)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Going into epoch 1" not in resumed.stderr + resumed.stdout
    helpers.assert_same_outcome(helpers.run_outcome(reference), helpers.run_outcome(output))
