"""The same seed and configuration on CPU give identical metrics and parameters."""

import helpers_reliability as helpers
from helpers_reliability import EVERY_STEP, reference_run, shared_corpus  # noqa: F401 (fixtures)


def test_same_seed_same_results(reference_run, shared_corpus, tmp_path):  # noqa: F811
    """Two runs of the recipe, in fresh processes: the same logs, robustness table and final parameters."""
    again = helpers.completed_run(tmp_path / "again", shared_corpus, **EVERY_STEP)
    first, second = helpers.run_outcome(reference_run), helpers.run_outcome(again)
    helpers.assert_same_outcome(first, second)
    assert "epoch: 3" in first["train_log"] and "real_loss" in first["train_log"]  # it did train, adversarially
