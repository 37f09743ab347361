"""DDP processes out of step: a timeout chosen in the yaml, and an error that says where each process was.

SpeechBrain's ``ddp_init_group`` creates the process group with a 2-hour
timeout, so processes that wait in different collectives (one in a
broadcast, the other in a barrier) hang for two hours before anything is
reported. The recipes keep that long timeout while the main process
prepares and validates the data alone (the others wait for it in a
barrier), then set the yaml's ``ddp_timeout_minutes`` for training and
evaluation, where every process works in step and no wait is long.
"""

import contextlib
import datetime

import torch
from speechbrain.utils.distributed import get_rank, is_distributed_initialized


class ProcessesOutOfStepError(RuntimeError):
    """A collective operation failed or timed out: the DDP processes no longer wait in the same collective."""


def set_collective_timeout(minutes):
    """Gives every later collective of this DDP process the yaml's ``ddp_timeout_minutes``.

    A no-op without DDP, or for None (SpeechBrain's limit stays).
    ``validation.validate_inputs`` checks the value first.
    """
    if minutes is not None and is_distributed_initialized():
        torch.distributed.set_timeout(datetime.timedelta(minutes=minutes))


# gloo raises plain RuntimeErrors: its own timeout, or the connection to a rank that stopped first (that
# rank's own timeout came a moment earlier, or it crashed).
GLOO_FAILURES = ("timed out", "connection closed by peer", "connection reset by peer")


def is_collective_failure(error):
    """Whether ``error`` comes from a collective: torch's distributed errors, or gloo's (``GLOO_FAILURES``).

    Example
    -------
    >>> is_collective_failure(RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer"))
    True
    >>> is_collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    False
    """
    message = str(error).lower()
    return isinstance(error, torch.distributed.DistError) or any(failure in message for failure in GLOO_FAILURES)


@contextlib.contextmanager
def out_of_step_errors(where):
    """Re-raises a failed collective as a ``ProcessesOutOfStepError`` naming where this process was.

    Arguments
    ---------
    where : callable
        Returns the process's position (stage, epoch, step) when the error is raised.
    """
    try:
        yield
    except RuntimeError as error:
        if not is_distributed_initialized() or not is_collective_failure(error):
            raise
        raise ProcessesOutOfStepError(
            f"Rank {get_rank()} of {torch.distributed.get_world_size()}: a collective operation failed at {where()}. "
            "The DDP processes were no longer in the same collective (one stopped, or took another path), or one "
            "was kept waiting longer than ddp_timeout_minutes. The other ranks' errors say where they were. If a "
            "process legitimately waits that long (a slow shared file system), raise --ddp_timeout_minutes. "
            f"The cause: {error}"
        ) from error
