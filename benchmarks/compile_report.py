"""Ahead-of-time compile report: registers, spills and shared memory of every Triton kernel.

``python -m benchmarks.compile_report [--out FILE] [--arch 80 89 90] [--quick]``

No GPU is needed. Each launcher runs on ``meta`` tensors of the model's shapes inside
``gmpvis.kernels._launch.recording(arch)``: it picks its tiles, warps and stages for that
architecture and records its launches instead of running them. Each distinct launch is
compiled with ``triton.compile`` for ``GPUTarget("cuda", cap, 32)``, specialised exactly as
Triton's JIT would specialise it at run time, and triton's bundled ``ptxas -v`` reports
registers and spills; the shared memory comes from the compiled kernel's metadata.

Writes a JSON list of rows ``{kernel, shape, dtype, arch, num_warps, num_stages, blocks,
registers, spill_bytes, shared_bytes, smem_limit, ok}`` (default
``benchmarks/results/compile_report.json``) and a Markdown table next to it, and exits
non-zero when a forward kernel spills or a kernel needs more shared memory than its
architecture has.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ARCH_CAPS = (80, 89, 90)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# --- what to compile: the r50 preset at 640x360 (strides 8/16/32/64, hidden 256, 8 heads)

LEVELS = [(45, 80), (23, 40), (12, 20), (6, 10)]  # encoder levels, fine -> coarse
PIXEL_LEVELS = [(6, 10), (12, 20), (23, 40), (45, 80), (90, 160)]  # pixel decoder DCN blocks
HIDDEN, HEADS, POINTS, QUERIES = 256, 8, 4, 100
HALF = ("bfloat16", "float16")


def _problems(quick: bool) -> list[tuple[str, str, object, object]]:
    """``(shape name, dtype, forward, backward)``: each calls launchers on meta tensors;
    ``backward`` is None with ``quick``."""
    import torch

    from gmpvis.kernels.ops import deform_conv2d as dcn
    from gmpvis.kernels.ops import gm_affinity as gma
    from gmpvis.kernels.ops import ms_deform_attn as msda
    from gmpvis.kernels.ops import sinkhorn as sk

    meta = torch.device("meta")

    def t(*shape, dtype="float32"):
        return torch.empty(shape, device=meta, dtype=getattr(torch, dtype))

    out = []
    # --quick: float16 compiles like bfloat16 (the same code, another element type)
    half = ("bfloat16",) if quick else HALF
    # sinkhorn: the GM head's 100 queries + dustbin, the tracker's live tracks x proposals
    for n1, n2 in [(100, 100), (100, 20), (20, 20)]:
        s = t(1, n1, n2)
        fwd = partial(sk._forward, s, 10, 1.0, None, None, 0.0)
        bwd = partial(sk._backward, t(1, n1 + 1, n2 + 1), s, 10, 1.0, None, None, 0.0)
        out.append((f"{n1}+1 x {n2}+1", "float32", fwd, bwd))
    # gm_affinity: the GM head's graphs (edge features c = 16, float32 under any AMP)
    for n in (100, 20):
        args = (t(1, n, 128), t(1, n, 128), t(1, n, n, 16), t(1, n, n, 16), t(1, n, n))
        fwd = partial(gma._forward, *args, 1.0, None, None)
        bwd = partial(gma._backward, t(1, n, n), *args, 1.0, None, None)
        out.append((f"{n} x {n} nodes, c=16", "float32", fwd, bwd))
    # ms_deform_attn: encoder self-attention (Q = S) and decoder cross-attention (Q = 100),
    # locations from reference points in the kernel (the model's path); value in the model's
    # dtypes (float32, or the AMP dtype), reference points float32
    shapes = torch.tensor(LEVELS, device=meta)
    starts = torch.empty(len(LEVELS), dtype=torch.int64, device=meta)
    S, L = sum(h * w for h, w in LEVELS), len(LEVELS)
    D = HIDDEN // HEADS
    for dtype in ("float32", *half):
        for name, Q in (("encoder", S), ("decoder", QUERIES)):
            value = t(1, S, HEADS, D, dtype=dtype)
            ref, off = t(1, Q, L, 2), t(1, Q, HEADS, L, POINTS, 2, dtype=dtype)
            logits = t(1, Q, HEADS, L, POINTS, dtype=dtype)
            args = (value, shapes, starts, off, logits, True)
            fwd = partial(msda._forward, *args, ref=ref)
            bwd = partial(msda._backward, t(1, Q, HEADS * D, dtype=dtype), *args, ref=ref)
            out.append((f"{name} Q={Q} S={S}", dtype, fwd, bwd))
    # deform_conv2d: the pixel decoder's 3x3 DCN blocks (256 -> 256, one offset group, a
    # modulation mask), channels-last as the decoder runs them
    cl = torch.channels_last
    for dtype in ("float32", *half):
        for h, w in PIXEL_LEVELS:
            x = t(1, HIDDEN, h, w, dtype=dtype).contiguous(memory_format=cl)
            off = t(1, 18, h, w, dtype=dtype).contiguous(memory_format=cl)
            mask = t(1, 9, h, w, dtype=dtype).contiguous(memory_format=cl)
            weight, bias = t(HIDDEN, HIDDEN, 3, 3, dtype=dtype), t(HIDDEN, dtype=dtype)
            args = (x, off, weight, bias, [1, 1], [1, 1], [1, 1], mask)
            fwd = partial(dcn._forward, *args)
            bwd = partial(
                dcn._backward, t(1, HIDDEN, h, w, dtype=dtype).contiguous(memory_format=cl), *args
            )
            out.append((f"{h}x{w}x{HIDDEN}", dtype, fwd, bwd))
    if quick:
        out = [(name, dtype, fwd, None) for name, dtype, fwd, _ in out]
    return out


# --- compiling one recorded launch


def _signature(kernel, target, args, kwargs):
    """Triton's own specialisation of ``kernel(*args, **kwargs)`` for ``target``."""
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(
        backend, kwargs, bound, specialization, options
    )
    return backend, signature, constexprs, attrs, kwargs


_PTXAS = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<st>\d+) bytes spill stores, (?P<ld>\d+) bytes "
    r"spill loads.*?Used (?P<regs>\d+) registers",
    re.S,
)


def _compile(job: dict) -> dict:
    """Compile one launch (in a worker process); return its resource usage."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel, args, kwargs, cap = job["kernel"], job["args"], job["kwargs"], job["cap"]
    target = GPUTarget("cuda", cap, 32)
    _, signature, constexprs, attrs, _ = _signature(kernel, target, args, kwargs)
    options = {k: kwargs[k] for k in ("num_warps", "num_stages", "maxnreg") if k in kwargs}
    knobs.nvidia.dump_ptxas_log = True
    # a fresh cache: a cache hit would skip ptxas and its report
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(dir=job["cache"])
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(
            ASTSource(kernel, signature, constexprs, attrs), target=target, options=options
        )
    match = _PTXAS.search(log.getvalue())
    if match is None:
        raise RuntimeError(f"no ptxas report for {kernel.__name__}:\n{log.getvalue()[-2000:]}")
    return {
        "registers": int(match["regs"]),
        "spill_bytes": int(match["st"]) + int(match["ld"]),
        "shared_bytes": int(compiled.metadata.shared),
        "num_warps": int(compiled.metadata.num_warps),
        "num_stages": int(compiled.metadata.num_stages),
        "compile_s": round(time.perf_counter() - start, 2),
    }


def _constexpr_blocks(kwargs) -> dict:
    """The tile-size constexprs (``BLOCK_*``) of a launch."""
    return {k: v for k, v in kwargs.items() if k.startswith("BLOCK")}


def _jobs(quick: bool, caps) -> tuple[list[dict], list[dict]]:
    """Record every launch for every architecture; deduplicate identical compiles."""
    from gmpvis.kernels._launch import ARCHS, recording

    rows, jobs, seen = [], [], {}
    for cap in caps:
        arch = ARCHS[cap]
        for name, dtype, fwd, bwd in _problems(quick):
            with recording(arch) as launches:
                fwd()
            n_fwd = len(launches)
            if bwd is not None:
                with recording(arch) as more:
                    bwd()
                launches += more
            for n, lc in enumerate(launches):
                kernel = lc.kernel
                kname = kernel.__name__
                key = (cap, kname, _spec_key(lc))
                if key not in seen:
                    seen[key] = len(jobs)
                    jobs.append(
                        {"kernel": kernel, "args": lc.args, "kwargs": lc.kwargs, "cap": cap}
                    )
                rows.append(
                    {
                        "kernel": kname,
                        "shape": name,
                        "dtype": dtype,
                        "arch": arch.name,
                        "blocks": _constexpr_blocks(lc.kwargs),
                        "grid": list(lc.grid),
                        "smem_limit": arch.smem_per_block,
                        "backward": n >= n_fwd,
                        "job": seen[key],
                    }
                )
    return rows, jobs


def _spec_key(lc) -> str:
    """What makes two launches compile to the same binary."""
    import torch

    def one(a):
        if isinstance(a, torch.Tensor):
            return f"*{a.dtype}"
        if isinstance(a, bool) or a is None:
            return repr(a)
        if isinstance(a, int):
            return "1" if a == 1 else ("i64" if abs(a) >= 2**31 else f"i{a % 16 == 0}")
        return type(a).__name__

    return repr([one(a) for a in lc.args]) + repr(sorted(lc.kwargs.items()))


def build_report(quick: bool, caps=ARCH_CAPS, workers: int = 2) -> list[dict]:
    global _JOBS
    rows, _JOBS = _jobs(quick, caps)
    with tempfile.TemporaryDirectory() as cache:
        for job in _JOBS:
            job["cache"] = cache
        if workers > 1:  # forked workers inherit the jobs (kernels and meta tensors)
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
                results = list(ex.map(_compile_index, range(len(_JOBS))))
        else:
            results = [_compile(j) for j in _JOBS]
    for row in rows:
        res = results[row.pop("job")]
        row.update(res)
        row["ok"] = row["shared_bytes"] <= row["smem_limit"] and (
            row["backward"] or row["spill_bytes"] == 0
        )
    return rows


_JOBS: list[dict] = []


def _compile_index(i: int) -> dict:
    return _compile(_JOBS[i])


# --- output


COLUMNS = ["kernel", "shape", "dtype", "arch", "num_warps", "num_stages", "blocks", "registers"]
COLUMNS += ["spill_bytes", "shared_bytes", "ok"]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r[c]
            if c == "blocks":
                v = " ".join(f"{k.removeprefix('BLOCK_')}={x}" for k, x in v.items())
            elif c == "ok":
                v = "yes" if v else "**NO**"
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def failures(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["shared_bytes"] > r["smem_limit"]:
            out.append(
                f"{r['kernel']} {r['shape']} {r['dtype']} {r['arch']}: {r['shared_bytes']} B shared"
                f" > {r['smem_limit']} B"
            )
        if not r["backward"] and r["spill_bytes"]:
            out.append(
                f"{r['kernel']} {r['shape']} {r['dtype']} {r['arch']}: spills {r['spill_bytes']} B"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "compile_report.json")
    parser.add_argument("--arch", type=int, nargs="*", default=list(ARCH_CAPS), choices=ARCH_CAPS)
    parser.add_argument(
        "--quick", action="store_true", help="forward kernels only, float32 and bfloat16"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if _interpreted() or "triton" in sys.modules and _triton_interprets():
        # triton.jit made interpreter functions: compile in a fresh process without it
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        cmd = [sys.executable, "-m", "benchmarks.compile_report", *(argv or sys.argv[1:])]
        return subprocess.run(cmd, env=env, check=False).returncode
    start = time.perf_counter()
    rows = build_report(args.quick, tuple(args.arch), args.workers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    md = args.out.with_suffix(".md")
    md.write_text(
        "# Ahead-of-time compile report\n\n"
        f"`python -m benchmarks.compile_report{' --quick' if args.quick else ''}`: "
        "registers per thread and spill bytes from ptxas -v, shared memory per block from "
        "the compiled kernel; `ok` = fits the architecture's shared memory and, for forward "
        "kernels, no spills.\n\n" + markdown(rows)
    )
    bad = failures(rows)
    print(markdown(rows))
    print(f"{len(rows)} rows in {time.perf_counter() - start:.0f} s: wrote {args.out} and {md}")
    for line in bad:
        print("FAIL", line)
    return 1 if bad else 0


def _triton_interprets() -> bool:
    from triton import knobs

    return bool(knobs.runtime.interpret)


if __name__ == "__main__":
    raise SystemExit(main())
