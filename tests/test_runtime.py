"""Device selection, the AMP table and autocast (``gmpvis.runtime``)."""

from __future__ import annotations

import pytest
import torch

from gmpvis.runtime import AMP_DTYPES, amp_dtype, autocast, resolve_device


def test_amp_table_and_autocast_dtype():
    assert amp_dtype("off") is None and AMP_DTYPES["bf16"] is torch.bfloat16
    with pytest.raises(ValueError, match=r"amp: expected one of .*'int8'"):
        amp_dtype("int8")
    a, b = torch.randn(3, 5), torch.randn(5, 2)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "off"):
        assert (a @ b).dtype == torch.float32


def test_resolve_device_names_bad_choices():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.mark.gpu
def test_resolve_device_makes_the_cuda_device_current():
    last = torch.cuda.device_count() - 1
    assert resolve_device(f"cuda:{last}") == torch.device("cuda", last)
    assert torch.cuda.current_device() == last
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_device(f"cuda:{last + 1}")
    torch.cuda.set_device(0)
