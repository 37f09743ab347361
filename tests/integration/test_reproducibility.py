"""Runs killed mid-epoch resume to the very results of an uninterrupted run with the same seed, in
the recipes and kinds of training whose resumed state differs from the vanilla DEMoS run's.

``test_faults.py`` kills the vanilla DEMoS run (conftest's ``reference_run``) at every point of a
step; ``tests/consistency/test_resume_guarantees.py`` checks that every yaml file saves what that
run saves. Each run here adds what no other test resumes:

- ``cnn4_similarity.yaml``: the similarity objective's own loss part (the embedding distance), kept
  mid-epoch in the running means of the loss parts;
- the EmoDB recipe (its own ``train.py`` and data preparation, on real speech), with single training
  (a Brain without adversarial state);
- ``cnn4_pgd.yaml``: a training attack with random starts, drawn from the attack's own generator.
"""

import signal

import helpers
import pytest


@pytest.mark.parametrize("yaml", ["cnn4_similarity.yaml", "recipes/EmoDB/hparams/cnn4_single.yaml", "cnn4_pgd.yaml"])
def test_killed_run_resumes_exactly(yaml, resume_corpus, tmp_path):
    """Killed right after its 5th step, in epoch 2 (one intra-epoch checkpoint a step), then resumed: the same logs,
    robustness table and parameters as an uninterrupted run with the same seed."""
    emodb = yaml.startswith("recipes/EmoDB")
    data, folds = (helpers.EMODB_SAMPLES, helpers.EMODB_SAMPLE_FOLDS) if emodb else (resume_corpus, {})
    reference = helpers.completed_run(tmp_path / "reference", data, hparams_file=yaml, **folds)
    output = tmp_path / "killed"
    killed = helpers.run_training(output, data, hparams_file=yaml, kill="after:5", **folds)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = helpers.run_training(output, data, hparams_file=yaml, **folds)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Going into epoch 1" not in resumed.stderr + resumed.stdout
    helpers.assert_same_outcome(helpers.run_outcome(reference), helpers.run_outcome(output))
