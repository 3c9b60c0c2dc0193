import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

# A tiny UNet forward takes ~80 ms on one thread but seconds with default threading on 2 cores.
torch.set_num_threads(1)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real")


def use_synthetic_data() -> bool:
    """True without ../shared/data/real, or with I2VGEN_SYNTHETIC_DATA=1 (to exercise that path anyway)."""
    forced = os.environ.get("I2VGEN_SYNTHETIC_DATA", "").strip().lower() in ("1", "true", "yes")
    return forced or not os.path.isdir(SHARED)


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory):
    """../shared/data/real (images/, videos/, each with a captions.txt), or, where it is absent, a synthetic
    folder with the same names and the properties the tests rely on (tests/fixtures_data.py), built once."""
    if not use_synthetic_data():
        return os.path.abspath(SHARED)
    from fixtures_data import build_real_data

    return str(build_real_data(tmp_path_factory.mktemp("real_data")))
