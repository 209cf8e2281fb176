"""Test setup: Triton's interpreter when no GPU is present, a seed per test, GPU markers."""

from __future__ import annotations

import os
import shutil
import zlib

# Must happen before triton is imported anywhere: no GPU -> run Triton kernels on the CPU.
if shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_every_test(request):
    """A fixed seed per test, different across tests (derived from the test id)."""
    seed = zlib.crc32(request.node.nodeid.encode()) & 0x7FFFFFFF
    torch.manual_seed(seed)
    np.random.seed(seed)
    import random

    random.seed(seed)
    yield
