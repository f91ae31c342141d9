"""Fine-tuning tests run torch on one thread: the runs are tiny, the CI machine has 2 shared cores
(oversubscribed intra-op threads made a 0.3 s run take 10 s), and one thread keeps CPU results
bitwise reproducible within the process whatever the machine's load."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
