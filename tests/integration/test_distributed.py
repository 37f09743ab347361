"""Processes out of step: ``ddp_timeout_minutes`` turns a desynchronised collective into an error naming where
each rank was."""

import subprocess
import sys
import textwrap

from helpers import REPO_ROOT, load_hparams, subprocess_env

from ser_adv_brain.data.validation import hyperparameter_problems

# Rank 0 broadcasts while rank 1 waits in a barrier: the desynchronisation of issue 12.
DESYNCHRONISED = """
if rank == 0:
    torch.distributed.broadcast_object_list(["checkpoint to delete"], src=0)
torch.distributed.barrier()
"""

# Rank 1 has already stopped (here without an error, so that torchrun lets rank 0 go on): rank 0's
# collective fails on the closed connection, as it does on the rank whose peer timed out a moment earlier.
PEER_STOPPED = """
if rank == 1:
    sys.exit(0)
torch.distributed.broadcast_object_list(["checkpoint to delete"], src=0)
"""


def launch(tmp_path, collectives, timeout_minutes=0.05):
    """Runs ``collectives`` on 2 gloo processes under ``torchrun``, with the collective timeout (3 s by default) and the
    position "batch 7 on rank N"; returns torchrun's exit status and the ranks' stderr."""
    script = tmp_path / "ranks.py"
    body = textwrap.indent(collectives.strip(), "    ")
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import speechbrain as sb
            import torch
            from ser_adv_brain.training.distributed import out_of_step_errors, set_collective_timeout

            sb.utils.distributed.ddp_init_group({"distributed_backend": "gloo"})  # SpeechBrain's 2-hour timeout
            set_collective_timeout(TIMEOUT_MINUTES)
            rank = torch.distributed.get_rank()
            with out_of_step_errors(lambda: f"batch 7 on rank {rank}"):
            """
        ).replace("TIMEOUT_MINUTES", str(timeout_minutes))
        + body
        + "\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    launcher = subprocess.Popen(
        command, cwd=REPO_ROOT, env=subprocess_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # 3 s of timeout, not SpeechBrain's 2 hours (the rest is two processes starting up).
        _, stderr = launcher.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        launcher.terminate()  # torchrun stops its ranks on SIGTERM
        launcher.communicate()
        raise AssertionError("the ranks were still waiting after 60 s: ddp_timeout_minutes was not applied")
    return launcher.returncode, stderr


def out_of_step(rank):
    return f"ProcessesOutOfStepError: Rank {rank} of 2: a collective operation failed at batch 7 on rank {rank}"


def test_a_desynchronised_collective_fails_within_the_timeout_naming_the_position(tmp_path):
    returncode, stderr = launch(tmp_path, DESYNCHRONISED)
    assert returncode != 0
    # Whichever rank times out first, the other fails on its closed connection: both name their position.
    assert out_of_step(0) in stderr and out_of_step(1) in stderr


def test_a_rank_whose_peer_stopped_first_names_its_position(tmp_path):
    # A timeout longer than the test waits: the closed connection, not the timeout, is what rank 0 meets.
    returncode, stderr = launch(tmp_path, PEER_STOPPED, timeout_minutes=5)
    assert returncode != 0
    assert out_of_step(0) in stderr and "Connection closed by peer" in stderr


def test_a_timeout_that_is_not_a_positive_number_is_refused_before_training():
    def problems(value):
        hparams = load_hparams("hparams/cnn4_vanilla.yaml", f"--ddp_timeout_minutes={value}")
        return [str(problem) for problem in hyperparameter_problems(hparams)]

    assert problems(10) == [] and problems(0.5) == []
    for value in (0, -1, "ten", "null"):
        expected = (
            []
            if value == "null"
            else [f"hyperparameter ddp_timeout_minutes: must be a number of minutes > 0, got {value!r}"]
        )
        assert problems(value) == expected
