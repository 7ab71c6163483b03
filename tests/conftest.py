import os

import pytest
import torch

# Two cores, often shared: keep every test process single-threaded so tests are not slowed by
# oversubscription (and timings in benchmarks are not disturbed by tests).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
