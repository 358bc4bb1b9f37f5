import pytest
import torch

# Tiny models: one intra-op thread is faster than two (no spin-waiting), and leaves the second core to the
# processes that some tests spawn.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
