"""Every row of ``tests/recipes/*.csv`` runs with its debug flags, as SpeechBrain's recipe tests run it.

The command is SpeechBrain's: ``python <Script_file> <Hparam_file> <test_debug_flags>
<run options> --output_folder=<folder> --debug --debug_persistently``, from the
repository root, on the CPU; then every ``file_exists`` check must hold.
"""

import os
import shlex
import sys

import pytest

from helpers_iface import files_to_check, recipe_rows, run_command

ROWS = recipe_rows()


@pytest.mark.parametrize(
    "row", [row for _, row in ROWS], ids=[f"{recipe_id}-{os.path.basename(row['Hparam_file'])}" for recipe_id, row in ROWS]
)
def test_recipe_runs_with_its_debug_flags(row, tmp_path):
    flags = shlex.split(row["test_debug_flags"])
    output_folder = next((f.split("=", 1)[1] for f in flags if f.startswith("--output_folder=")), None)
    if output_folder is None:
        output_folder = str(tmp_path / "output")
        flags.append(f"--output_folder={output_folder}")
    command = [sys.executable, row["Script_file"], row["Hparam_file"], *flags, "--device=cpu"]
    run_command([*command, "--debug", "--debug_persistently"])
    missing = [name for name in files_to_check(row["test_debug_checks"]) if not os.path.exists(os.path.join(output_folder, name))]
    assert not missing, f"{row['Hparam_file']}: no {missing} in {output_folder}"
