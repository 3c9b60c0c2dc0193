import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# A tiny UNet forward takes ~80 ms on one thread but seconds with default threading on 2 cores.
torch.set_num_threads(1)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real")


@pytest.fixture
def real_data_dir():
    path = os.path.abspath(SHARED)
    if not os.path.isdir(path):
        pytest.skip("../shared/data/real is not present")
    return path

