"""Helpers shared by the kernel tests: Inductor without caches, the dtypes an op receives."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode


@pytest.fixture
def fresh_inductor():
    """``torch.compile`` with Inductor and no FX-graph / AOT-autograd cache: a cached graph
    would keep the output strides an older fake promised."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    with (
        inductor_config.patch(fx_graph_cache=False),
        functorch_config.patch(enable_autograd_cache=False),
    ):
        yield
    torch._dynamo.reset()


class OpDtypes(TorchDispatchMode):
    """Records the dtypes of the tensor arguments of every ``gmpvis::`` op call."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, list[torch.dtype | None]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name.startswith("gmpvis."):
            self.calls.setdefault(
                name.removeprefix("gmpvis."),
                [a.dtype if isinstance(a, torch.Tensor) else None for a in args],
            )
        return func(*args, **(kwargs or {}))


class Deterministic:
    """Runs a callable under ``torch.use_deterministic_algorithms(True)``."""

    @staticmethod
    def twice(run):
        """``run()`` twice in deterministic mode: both results."""
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            return run(), run()
        finally:
            torch.use_deterministic_algorithms(previous)

    @staticmethod
    def raises(run, match: str):
        """``run()`` in deterministic mode raises torch's RuntimeError naming ``match``, and
        with ``warn_only=True`` warns instead."""
        import warnings

        previous = torch.are_deterministic_algorithms_enabled()
        previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        try:
            torch.use_deterministic_algorithms(True)
            with pytest.raises(RuntimeError, match=match):
                run()
            torch.use_deterministic_algorithms(True, warn_only=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run()
            assert any(match in str(w.message) for w in caught), [str(w.message) for w in caught]
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


@pytest.fixture
def deterministic():
    return Deterministic


@pytest.fixture
def op_dtypes():
    """A fresh :class:`OpDtypes` mode (use it as a context manager)."""
    return OpDtypes()
