"""Processes out of step: ``ddp_timeout_minutes`` turns a desynchronised collective into an error naming where
each rank was."""

import subprocess
import sys
import textwrap

from helpers import REPO_ROOT, load_hparams, subprocess_env

from ser_adv_brain.data.validation import hyperparameter_problems

# Rank 0 broadcasts while rank 1 waits in a barrier: the desynchronisation of issue 12.
DESYNCHRONISED = textwrap.dedent(
    """
    import speechbrain as sb
    import torch
    from ser_adv_brain.training.distributed import out_of_step_errors, set_collective_timeout

    sb.utils.distributed.ddp_init_group({"distributed_backend": "gloo"})  # SpeechBrain's 2-hour timeout
    set_collective_timeout(0.05)
    rank = torch.distributed.get_rank()
    with out_of_step_errors(lambda: f"batch 7 on rank {rank}"):
        if rank == 0:
            torch.distributed.broadcast_object_list(["checkpoint to delete"], src=0)
        torch.distributed.barrier()
    """
)


def test_a_desynchronised_collective_fails_within_the_timeout_naming_the_position(tmp_path):
    script = tmp_path / "desynchronised.py"
    script.write_text(DESYNCHRONISED, encoding="utf-8")
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
        raise AssertionError(
            "the desynchronised ranks were still waiting after 60 s: ddp_timeout_minutes was not applied"
        )
    assert launcher.returncode != 0
    for rank in (0, 1):
        assert (
            f"ProcessesOutOfStepError: Rank {rank} of 2: a collective operation failed at batch 7 on rank {rank}"
            in stderr
        )


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
