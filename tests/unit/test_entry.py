"""An entry's provenance: what computed its figures."""

import subprocess

from ser_adv_brain.reports import entry


def test_an_entry_names_the_commit_its_process_loaded_not_the_checkout_it_finds_when_written(monkeypatch):
    loaded = entry.code_version()

    def moved_on(command, **kwargs):
        # A commit or an edit landed in the checkout during the run's hours of training.
        return subprocess.CompletedProcess(command, 0, stdout="0ff1ce5\n")

    monkeypatch.setattr(entry.subprocess, "run", moved_on)
    assert entry.provenance("cpu")["code_version"] == loaded
