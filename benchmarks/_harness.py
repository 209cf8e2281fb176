"""Provider-vs-baseline timing harness shared by every kernel benchmark (tritonbench style).

A benchmark module ``benchmarks/bench_<op>.py`` exposes ``cases(device) -> list[Case]``.
Each :class:`Case` makes its inputs once and names providers (``torch`` reference,
``torch.compile`` of it, ``triton``, ``torchvision``...). The harness times forward and
forward+backward per provider, records peak memory and the max error against the baseline.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Inputs = dict[str, object]


@dataclass
class Case:
    """One op at one shape.

    ``make_inputs(device, dtype)`` returns keyword arguments; tensors that should receive
    gradients have ``requires_grad=True``. ``providers`` map a name to ``fn(**inputs)``.
    ``gpu_only`` providers are skipped on a CPU (the reason is printed). ``min_bytes``
    (memory-bound ops): ``(inputs, output) -> bytes`` the forward must move at least (every
    input read once, the output written once); forward rows then report the achieved GB/s
    and the percentage of the device's peak bandwidth (on a CPU: "unmeasured").
    """

    op: str
    shape: str
    make_inputs: Callable[[torch.device, torch.dtype], Inputs]
    providers: dict[str, Callable[..., torch.Tensor]]
    baseline: str = "torch"
    group: str = "model"  # "model" (the shapes the model uses) or "sweep"
    gpu_only: tuple[str, ...] = ("triton",)
    backward: bool = True
    dtypes: tuple[torch.dtype, ...] = (torch.float32,)
    notes: dict[str, str] = field(default_factory=dict)
    min_bytes: Callable[[Inputs, torch.Tensor], int] | None = None


def tensor_bytes(*tensors: object) -> int:
    """Bytes of the tensors among ``tensors`` (others are skipped)."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def peak_bandwidth_gbs(device: torch.device) -> float | None:
    """The device's peak DRAM bandwidth in GB/s (double data rate x bus width), or None."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def _bandwidth(case: Case, inputs: Inputs, out: torch.Tensor, ms: float, device) -> dict:
    if case.min_bytes is None:
        return {}
    if device.type != "cuda":
        return {"gb_s": "unmeasured", "pct_peak": "unmeasured"}
    gbs = case.min_bytes(inputs, out) / (ms * 1e6)  # bytes per ms -> GB/s
    peak = peak_bandwidth_gbs(device)
    return {"gb_s": gbs, "pct_peak": None if peak is None else 100 * gbs / peak}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, *, reps: int, warmup: int) -> float:
    """Median wall time of ``fn`` in milliseconds (CUDA: ``triton.testing.do_bench``)."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _grad_inputs(inputs: Inputs) -> list[torch.Tensor]:
    return [v for v in inputs.values() if isinstance(v, torch.Tensor) and v.requires_grad]


def _fresh(inputs: Inputs) -> Inputs:
    """Detached copies so providers do not share autograd state."""
    out: Inputs = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().clone().requires_grad_(v.requires_grad)
        else:
            out[k] = v
    return out


def run_case(
    case: Case, device: torch.device, dtype: torch.dtype, *, reps: int = 10, warmup: int = 2
) -> list[dict]:
    """Time every provider of ``case``; return one row per (provider, mode)."""
    rows: list[dict] = []
    base_inputs = case.make_inputs(device, dtype)
    reference_out = None
    results: dict[str, dict] = {}
    for name, fn in case.providers.items():
        row_base = {
            "op": case.op,
            "shape": case.shape,
            "group": case.group,
            "dtype": str(dtype).replace("torch.", ""),
            "provider": name,
        }
        if device.type != "cuda" and name in case.gpu_only:
            reason = "needs a CUDA GPU (Triton is timed only on GPUs)"
            rows.append({**row_base, "mode": "fwd", "ms": None, "note": reason})
            continue
        inputs = _fresh(base_inputs)
        try:
            with torch.no_grad():
                out = fn(**inputs)
            fwd = time_ms(lambda: fn(**inputs), device, reps=reps, warmup=warmup)  # noqa: B023
        except Exception as exc:  # a provider that cannot run is reported, not fatal
            rows.append({**row_base, "mode": "fwd", "ms": None, "note": f"failed: {exc}"[:120]})
            continue
        if name == case.baseline:
            reference_out = out
        err = None
        if reference_out is not None and name != case.baseline:
            err = (out.float() - reference_out.float()).abs().max().item()
        results[name] = {"out": out}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            with torch.no_grad():
                fn(**inputs)
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak = None
        rows.append(
            {
                **row_base,
                "mode": "fwd",
                "ms": fwd,
                "max_err": err,
                "peak_mib": peak,
                **_bandwidth(case, inputs, out, fwd, device),
            }
        )
        grads = _grad_inputs(inputs)
        if case.backward and grads:
            grad_out = torch.randn_like(out)

            def fwd_bwd(fn=fn, inputs=inputs, grads=grads, grad_out=grad_out):
                y = fn(**inputs)
                torch.autograd.grad(y, grads, grad_out, allow_unused=True)

            fb = time_ms(fwd_bwd, device, reps=reps, warmup=warmup)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                fwd_bwd()
                _sync(device)
                peak = torch.cuda.max_memory_allocated(device) / 2**20
            rows.append({**row_base, "mode": "fwd+bwd", "ms": fb, "max_err": err, "peak_mib": peak})
    # speedup over the baseline, per mode
    base = {r["mode"]: r["ms"] for r in rows if r["provider"] == case.baseline and r["ms"]}
    for r in rows:
        if r.get("ms") and base.get(r["mode"]):
            r["speedup"] = base[r["mode"]] / r["ms"]
    return rows
