"""gm_affinity benchmark: reference, torch.compile, Triton and the dense Kronecker ``M``.

Providers:
  torch          ``reference.gm_affinity``: materialises ``[B, n1, n1, n2, n2, c]``.
  torch.compile  the same reference through ``torch.compile``.
  triton         the public op with the Triton backend (Gaussian affinity on the fly,
                 O(n1 * n2) memory besides the inputs).
  dense          the pygmtools/GMTracker way: ``M = kron(G1, G2) diag(vec Ke) kron(H1, H2)^T``
                 (``reference.gm_affinity_dense``), then ``node + M @ vec(S)``. O(n^6) memory:
                 only where it fits.

Group "model": the graph-matching head's shapes (config defaults: ``gm_edge_dim`` c = 16,
``hidden_dim`` d = 256), n1 = n2 = 32 proposals per frame, B = 4 frame pairs. Target: Triton
>= 10x faster than dense there, peak memory O(n1 * n2). Group "sweep": n = 8 .. 128.
On a CPU every shape is scaled down (said in the label) so that the reference providers
finish in seconds.
"""

from __future__ import annotations

import functools

import torch

from benchmarks._harness import Case
from gmpvis.kernels import gm_affinity, reference, use_backend

OP = "gm_affinity"
SIGMA = 1.0
DENSE_MAX_N = {"cuda": 32, "cpu": 12}  # kron(G1, G2) has n^2 * (n (n - 1))^2 entries
REFERENCE_MAX_N = {"cuda": 64, "cpu": 24}  # [B, n, n, n, n, c] float32 per reference call


def make_inputs_fn(B: int, n1: int, n2: int, c: int, d: int):
    """Inputs with the second batch half masked down to ~3/4 of the nodes (variable sizes)."""

    def make(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
        g = torch.Generator().manual_seed(0)

        def rnd(*shape, scale=1.0):
            x = torch.randn(*shape, generator=g) * scale
            return x.to(device=device, dtype=dtype).requires_grad_(True)

        mask1 = torch.ones(B, n1, dtype=torch.bool)
        mask2 = torch.ones(B, n2, dtype=torch.bool)
        mask1[B // 2 :, (3 * n1 + 3) // 4 :] = False
        mask2[B // 2 :, (3 * n2 + 3) // 4 :] = False
        assign = torch.rand(B, n1, n2, generator=g) / max(n1, n2)
        return {
            "node1": rnd(B, n1, d, scale=d**-0.5),
            "node2": rnd(B, n2, d, scale=d**-0.5),
            "edge1": rnd(B, n1, n1, c, scale=0.5 * c**-0.5),
            "edge2": rnd(B, n2, n2, c, scale=0.5 * c**-0.5),
            "assign": assign.to(device=device, dtype=dtype).requires_grad_(True),
            "sigma": SIGMA,
            "mask1": mask1.to(device),
            "mask2": mask2.to(device),
        }

    return make


def torch_provider(**kw) -> torch.Tensor:
    return reference.gm_affinity(**kw)


@functools.cache
def _compiled():
    return torch.compile(reference.gm_affinity)


def compile_provider(**kw) -> torch.Tensor:
    return _compiled()(**kw)


def triton_provider(**kw) -> torch.Tensor:
    with use_backend("triton"):
        return gm_affinity(**kw)


def dense_provider(*, node1, node2, edge1, edge2, assign, sigma, mask1, mask2) -> torch.Tensor:
    masks = {"mask1": mask1, "mask2": mask2}
    M = reference.gm_affinity_dense(edge1, edge2, sigma=sigma, **masks)
    return reference.gm_affinity_from_dense(M, node1, node2, assign, **masks)


def _case(group: str, B: int, n1: int, n2: int, c: int, d: int, dev: str, tag: str) -> Case:
    providers = {}
    notes = {}
    if max(n1, n2) <= REFERENCE_MAX_N[dev]:
        providers["torch"] = torch_provider
    else:
        notes["torch"] = (
            f"omitted: [B, n1, n1, n2, n2, c] does not fit above n={REFERENCE_MAX_N[dev]}"
        )
    providers["torch.compile"] = compile_provider
    providers["triton"] = triton_provider
    if max(n1, n2) <= DENSE_MAX_N[dev]:
        providers["dense"] = dense_provider
    else:
        notes["dense"] = f"omitted: O(n^6) Kronecker M does not fit above n={DENSE_MAX_N[dev]}"
    shape = f"B={B} n1={n1} n2={n2} c={c} d={d}{tag}"
    return Case(
        op=OP,
        shape=shape,
        make_inputs=make_inputs_fn(B, n1, n2, c, d),
        providers=providers,
        baseline="torch" if "torch" in providers else "torch.compile",
        group=group,
        dtypes=(torch.float32, torch.float16) if dev == "cuda" else (torch.float32,),
        notes=notes,
    )


def cases(device: torch.device) -> list[Case]:
    """Model shape (n1 = n2 = 32) and a sweep n = 8 .. 128; CPU: scaled down."""
    if device.type == "cuda":
        out = [_case("model", 4, 32, 32, 16, 256, "cuda", "")]
        out += [_case("sweep", 2, n, n, 16, 64, "cuda", "") for n in (8, 16, 32, 64, 128)]
        out.append(_case("sweep", 2, 100, 37, 16, 64, "cuda", " (non-square)"))
        return out
    tag = " (cpu-scaled; model n=32)"
    out = [_case("model", 2, 12, 12, 16, 256, "cpu", tag)]
    out += [_case("sweep", 2, n, n, 16, 64, "cpu", " (cpu-scaled)") for n in (4, 8, 16)]
    return out
