import os

import pytest
import torch

# Keep the two cores of a CI machine from oversubscribing when several tests spawn processes.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
