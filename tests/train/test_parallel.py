"""Process-group plumbing that needs no second process: launch errors, the stop vote, exit codes."""

import signal

import pytest
import torch

from rtdmd.devices import resolve_device
from rtdmd.errors import UserError
from rtdmd.train.parallel import Dist, env_world_size, shard_backbone
from rtdmd.train.signals import PREEMPTED, StopRequest, exit_code


class TwoRanks(Dist):
    """Rank 0 of two, the other rank's contribution to every all-reduce given."""

    def __init__(self, other: list[float]):
        super().__init__(0, 2)
        self.other = torch.tensor(other)

    def all_reduce_sum(self, tensor):
        return tensor + self.other


@pytest.mark.parametrize("mine, other, agreed", [
    (None, [0.0, 0.0], None),
    (None, [0.0, 1.0], signal.SIGTERM),  # the other rank was preempted: stop too
    (signal.SIGTERM, [0.0, 0.0], signal.SIGTERM),
    (signal.SIGTERM, [1.0, 0.0], signal.SIGINT),  # a Ctrl-C anywhere wins: exit 130 on every rank
    (None, [1.0, 0.0], signal.SIGINT),
])
def test_ranks_agree_to_stop_and_why(mine, other, agreed):
    request = StopRequest()
    request.signal = mine
    assert request.agreed(TwoRanks(other)) == (agreed is not None)
    assert request.signal == agreed


def test_exit_codes():
    assert (exit_code(None), exit_code(signal.SIGTERM), exit_code(signal.SIGINT)) == (0, PREEMPTED, 130) == (0, 75, 130)


def test_mean_metrics_averages_floats_only():
    # the other rank's values come in sorted key order: grad 10, loss 3
    metrics = TwoRanks([10.0, 3.0]).mean_metrics({"loss": 1.0, "grad": 4.0, "stop_k": 2, "steps": "01"})
    assert metrics == {"grad": 7.0, "loss": 2.0, "stop_k": 2, "steps": "01"}  # (4 + 10) / 2, (1 + 3) / 2


def test_launch_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE='two' is not an integer"):
        env_world_size()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda:1")


def test_fsdp_needs_the_backbone_to_list_its_units():
    class NoUnits:
        device = torch.device("cpu")

    with pytest.raises(UserError, match="does not list its FSDP units.*use run.parallel=ddp"):
        shard_backbone(NoUnits(), ["generator"], Dist(0, 2, 0, "fsdp"))
