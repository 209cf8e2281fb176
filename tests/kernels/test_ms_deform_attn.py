"""Triton multi-scale deformable attention vs the PyTorch reference.

On a machine without a GPU the Triton kernels run under ``TRITON_INTERPRET=1`` (set by the root
conftest), so shapes are tiny: the interpreter runs every program in Python.
"""

from __future__ import annotations

import os

import pytest
import torch

from gmpvis.kernels import (
    ms_deform_attn,
    ms_deform_attn_fused,
    ms_deform_attn_offsets,
    reference,
    use_backend,
)
from gmpvis.kernels.ops import ms_deform_attn as msda_module

# Both paths accumulate in float32; half-precision results differ by the final rounding.
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-4},
    torch.float16: {"atol": 4e-3, "rtol": 4e-3},
    torch.bfloat16: {"atol": 3e-2, "rtol": 3e-2},
}

HAS_INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"
needs_triton_cpu = pytest.mark.skipif(
    not HAS_INTERPRETER, reason="Triton on CPU tensors needs TRITON_INTERPRET=1"
)

OPS = {
    "weights": (ms_deform_attn, reference.ms_deform_attn),
    "fused": (ms_deform_attn_fused, reference.ms_deform_attn_fused),
}

# (B, Q, H, D, level shapes, P): one level / one point, D not a power of two with a 1x1 level
# and L*P = 6, only 1x1 levels (every query hits the same value rows: colliding atomics),
# and Q spanning several query blocks (BLOCK_Q = 32 forward, 16 backward at D = 32).
SHAPES = {
    "one_level_one_point": (1, 3, 2, 8, [(3, 4)], 1),
    "odd_d12_1x1_level": (2, 5, 2, 12, [(4, 5), (2, 3), (1, 1)], 2),
    "all_1x1_levels": (1, 4, 2, 4, [(1, 1), (1, 1)], 3),
    "several_query_blocks": (1, 37, 1, 32, [(5, 7), (3, 2)], 4),
}


def make_inputs(B, Q, H, D, shapes, P, dtype=torch.float32, device="cpu", loc_dtype=None):
    """Random inputs; about 30% of the location coordinates fall outside [0, 1]."""
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64, device=device)
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S, L = int(areas.sum()), len(shapes)
    value = torch.randn(B, S, H, D, device=device).to(dtype)
    loc = (torch.rand(B, Q, H, L, P, 2, device=device) * 1.5 - 0.25).to(loc_dtype or dtype)
    attention = (torch.randn(B, Q, H, L, P, device=device) * 2).to(dtype)
    return value, spatial_shapes, level_start_index, loc, attention


def run_with_grads(fn, value, spatial_shapes, level_start_index, loc, attention, grad_out=None):
    """Output and gradients w.r.t. value, locations and attention (fresh leaves)."""
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attention)]
    out = fn(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
    if grad_out is None:
        grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, grad_out)
    return out, grads, grad_out


def assert_matches_reference(op, inputs, dtype):
    fn, ref = OPS[op]
    with use_backend("triton"):
        out, grads, grad_out = run_with_grads(fn, *inputs)
    ref_out, ref_grads, _ = run_with_grads(ref, *inputs, grad_out=grad_out)
    assert out.dtype == ref_out.dtype == inputs[0].dtype
    assert out.abs().max() > 0
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    for name, g, rg in zip(("value", "locations", op), grads, ref_grads, strict=True):
        assert g.dtype == rg.dtype, name
        scale = rg.abs().max().clamp_min(1.0)  # location grads scale with W_l, H_l
        torch.testing.assert_close(g / scale, rg / scale, **TOL[dtype], msg=f"grad {name}")


# ----------------------------------------------------------------------------- Triton vs reference


@needs_triton_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_triton_matches_reference(shape, op, dtype):
    assert_matches_reference(op, make_inputs(*SHAPES[shape], dtype=dtype), dtype)


@needs_triton_cpu
@pytest.mark.parametrize("op", list(OPS))
def test_triton_bfloat16(op):
    """bf16 loads convert to float32 before any arithmetic, so the interpreter runs them too."""
    inputs = make_inputs(*SHAPES["odd_d12_1x1_level"], dtype=torch.bfloat16)
    assert_matches_reference(op, inputs, torch.bfloat16)


@needs_triton_cpu
def test_triton_mixed_dtypes_and_far_locations():
    """fp16 value with fp32 locations, some locations far outside the image (all corners 0)."""
    inputs = list(
        make_inputs(2, 5, 1, 12, [(3, 3), (2, 1)], 2, torch.float16, loc_dtype=torch.float32)
    )
    inputs[3][0, :2] = inputs[3][0, :2] * 1e4 - 5e3
    assert_matches_reference("fused", tuple(inputs), torch.float16)


@needs_triton_cpu
def test_triton_non_contiguous_inputs():
    value, shapes, starts, loc, logits = make_inputs(1, 6, 2, 8, [(3, 4), (2, 2)], 2)
    value_t = value.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    logits_t = logits.transpose(1, 2).contiguous().transpose(1, 2)
    assert not value_t.is_contiguous() or not logits_t.is_contiguous()
    with use_backend("triton"):
        out = ms_deform_attn_fused(value_t, shapes, starts, loc, logits_t)
    ref = reference.ms_deform_attn_fused(value, shapes, starts, loc, logits)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])


@needs_triton_cpu
def test_triton_backend_runs_the_kernels(monkeypatch):
    """The triton backend launches the Triton kernels (not the reference) on CPU tensors."""
    module = msda_module
    calls = []
    for name in ("_forward", "_backward"):
        launcher = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _f=launcher, _n=name, **k: calls.append(_n) or _f(*a, **k)
        )
    inputs = make_inputs(1, 2, 1, 4, [(2, 2)], 1)
    with use_backend("triton"):
        run_with_grads(ms_deform_attn_fused, *inputs)
    assert calls == ["_forward", "_backward"]
    with use_backend("torch"):
        run_with_grads(ms_deform_attn_fused, *inputs)
    assert len(calls) == 2


@needs_triton_cpu
def test_triton_no_queries():
    value, shapes, starts, loc, attention = make_inputs(1, 0, 2, 4, [(2, 2)], 1)
    with use_backend("triton"):
        out, grads, _ = run_with_grads(ms_deform_attn_fused, value, shapes, starts, loc, attention)
    assert out.shape == (1, 0, 8)
    assert grads[0].shape == value.shape and not grads[0].any()


def test_fused_equals_softmax_then_weights():
    value, shapes, starts, loc, logits = make_inputs(2, 3, 2, 6, [(3, 2), (1, 1)], 3)
    B, Q, H, L, P = logits.shape
    weights = logits.view(B, Q, H, L * P).softmax(-1).view(B, Q, H, L, P)
    torch.testing.assert_close(
        ms_deform_attn_fused(value, shapes, starts, loc, logits),
        ms_deform_attn(value, shapes, starts, loc, weights),
    )


def make_offset_inputs(B, Q, H, D, shapes, P, ref_dim, dtype=torch.float32):
    """Reference points (float32, some near the border) and offsets of a few pixels."""
    value, spatial_shapes, starts, _, attention = make_inputs(B, Q, H, D, shapes, P, dtype)
    L = len(shapes)
    ref = torch.rand(B, Q, L, ref_dim) * 1.2 - 0.1
    if ref_dim == 4:
        ref[..., 2:] = torch.rand(B, Q, L, 2) * 0.5 + 0.05  # box sizes
    offsets = (torch.randn(B, Q, H, L, P, 2) * 2).to(dtype)
    return value, spatial_shapes, starts, ref, offsets, attention


@needs_triton_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("fused", [True, False], ids=["logits", "weights"])
@pytest.mark.parametrize("ref_dim", [2, 4], ids=["points", "boxes"])
def test_offsets_triton_matches_reference(ref_dim, fused, dtype):
    """Locations made in the kernel: output and gradients of value, reference points,
    offsets and attention against the reference (which builds the location tensor)."""
    inputs = make_offset_inputs(2, 19, 2, 12, [(4, 5), (2, 3), (1, 1)], 2, ref_dim, dtype)
    value, shapes, starts, ref, off, attn = inputs
    go = torch.randn(2, 19, 24).to(dtype)

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in (value, ref, off, attn)]
        out = fn(leaves[0], shapes, starts, *leaves[1:], fused=fused)
        return out, torch.autograd.grad(out, leaves, go)

    with use_backend("triton"):
        out, grads = run(ms_deform_attn_offsets)
    ref_out, ref_grads = run(reference.ms_deform_attn_offsets)
    assert out.dtype == dtype and out.abs().max() > 0
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    for name, g, rg in zip(("value", "reference_points", "offsets", "attention"), grads,
                           ref_grads, strict=True):  # fmt: skip
        assert g.dtype == rg.dtype and g.abs().max() > 0, name
        scale = rg.abs().max().clamp_min(1.0)
        torch.testing.assert_close(g / scale, rg / scale, **TOL[dtype], msg=name)


def test_offsets_sampling_locations_formula():
    """Deformable DETR's formulas, written out: points ``ref + off / (W_l, H_l)``, boxes
    ``ref_xy + off / P * ref_wh / 2``."""
    shapes = torch.tensor([[4, 8], [2, 2]])
    off = torch.randn(1, 1, 1, 2, 3, 2)
    pts = torch.rand(1, 1, 2, 2)
    loc = reference.sampling_locations(shapes, pts, off)
    torch.testing.assert_close(
        loc[0, 0, 0, 0], pts[0, 0, 0] + off[0, 0, 0, 0] / torch.tensor([8.0, 4.0])
    )
    boxes = torch.rand(1, 1, 2, 4)
    loc = reference.sampling_locations(shapes, boxes, off)
    want = boxes[0, 0, 1, :2] + off[0, 0, 0, 1] / 3 * boxes[0, 0, 1, 2:] / 2
    torch.testing.assert_close(loc[0, 0, 0, 1], want)


@needs_triton_cpu
def test_offsets_triton_makes_no_location_tensor():
    """The Triton forward never materialises a ``[B, Q, H, L, P, 2]`` location tensor."""
    from torch.utils._python_dispatch import TorchDispatchMode

    value, shapes, starts, ref, off, attn = make_offset_inputs(1, 5, 2, 4, [(3, 3)], 2, 2)

    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                self.seen.append((tuple(out.shape), out.dtype))
            return out

    off, attn = off.half(), attn.half()
    with Shapes() as mode:  # the launcher itself (an op body hides its allocations)
        msda_module._forward(value, shapes, starts, off, attn, True, ref=ref)
    assert mode.seen and (tuple(off.shape), torch.float32) not in mode.seen
    with Shapes() as mode:  # the reference does build it (the check can fail)
        reference.ms_deform_attn_offsets(value, shapes, starts, ref, off, attn)
    assert (tuple(off.shape), torch.float32) in mode.seen


def test_offsets_reference_points_shape_is_checked():
    value, shapes, starts, ref, off, attn = make_offset_inputs(1, 3, 2, 4, [(2, 2)], 2, 2)
    with pytest.raises(ValueError, match="reference_points"):
        ms_deform_attn_offsets(value, shapes, starts, ref[..., :1], off, attn)
    with pytest.raises(ValueError, match="reference_points"):
        ms_deform_attn_offsets(value, shapes, starts, ref[:, :2], off, attn)


@needs_triton_cpu
@pytest.mark.parametrize("op", ["fused", "offsets"])
def test_torch_compile_inductor_with_permuted_inputs(op, fresh_inductor):
    """Inductor checks every custom op output against its fake's strides: permuted value,
    location / offset and attention views, forward and backward (Triton, interpreter)."""
    value, shapes, starts, ref, off, attn = make_offset_inputs(2, 6, 2, 4, [(3, 2), (2, 2)], 2, 2)
    loc = reference.sampling_locations(shapes, ref, off).float()
    views = [
        value.transpose(0, 1).contiguous().transpose(0, 1),
        (off if op == "offsets" else loc).transpose(1, 2).contiguous().transpose(1, 2),
        attn.permute(0, 2, 1, 3, 4).contiguous().permute(0, 2, 1, 3, 4),
    ]
    assert not any(v.is_contiguous() for v in views)

    def fn(v, x, a):
        if op == "offsets":
            out = ms_deform_attn_offsets(v * 1.0, shapes, starts, ref, x, a)
        else:
            out = ms_deform_attn_fused(v * 1.0, shapes, starts, x, a)
        return (out**2).sum()

    leaves = [t.detach().requires_grad_() for t in views]
    with use_backend("triton"):
        loss = torch.compile(fn, fullgraph=True)(*leaves)
        grads = torch.autograd.grad(loss, leaves)
    ref_leaves = [t.detach().clone().requires_grad_() for t in views]
    with use_backend("torch"):
        loss_ref = fn(*ref_leaves)
        grads_ref = torch.autograd.grad(loss_ref, ref_leaves)
    torch.testing.assert_close(loss, loss_ref, **TOL[torch.float32])
    for g, r in zip(grads, grads_ref, strict=True):
        scale = r.abs().max().clamp_min(1.0)
        torch.testing.assert_close(g / scale, r / scale, **TOL[torch.float32])


@needs_triton_cpu
def test_deterministic_mode_raises_on_triton_backward(deterministic):
    """The Triton backward scatters grad_value with atomics: under deterministic mode it
    raises torch's error naming the op (a warning with warn_only); the forward runs."""
    inputs = make_inputs(1, 3, 2, 4, [(2, 3)], 2)

    def run():
        with use_backend("triton"):
            run_with_grads(ms_deform_attn_fused, *inputs)

    deterministic.raises(run, "ms_deform_attn backward")
    with use_backend("triton"):
        deterministic.twice(lambda: ms_deform_attn_fused(*inputs))  # forward: no atomics


def test_deterministic_mode_reference_backward_is_reproducible(deterministic):
    """On the CPU the reference (grid_sample) backward is deterministic: same bits twice."""
    inputs = make_inputs(1, 5, 2, 4, [(3, 3), (2, 1)], 2)

    def run():
        with use_backend("torch"):
            return run_with_grads(ms_deform_attn_fused, *inputs, grad_out=torch.ones(1, 5, 8))[1]

    first, second = deterministic.twice(run)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("op", ["fused", "offsets"])
def test_autocast_gives_the_autocast_dtype(op, op_dtypes):
    """Under autocast (bfloat16) value and attention (and offsets) reach the op in bfloat16;
    locations and reference points keep float32."""
    value, shapes, starts, ref, off, attn = make_offset_inputs(1, 3, 2, 4, [(2, 2)], 2, 2)
    loc = reference.sampling_locations(shapes, ref, off).float()
    with torch.autocast("cpu", dtype=torch.bfloat16), op_dtypes, use_backend("torch"):
        if op == "offsets":
            out = ms_deform_attn_offsets(value, shapes, starts, ref, off, attn)
        else:
            out = ms_deform_attn_fused(value, shapes, starts, loc, attn)
    name = "ms_deform_attn_offsets" if op == "offsets" else "ms_deform_attn_fused"
    seen = op_dtypes.calls[name]
    bf16, f32 = torch.bfloat16, torch.float32
    want = [bf16, None, None, f32, bf16, bf16] if op == "offsets" else [bf16, None, None, f32, bf16]
    assert [None if i in (1, 2) else d for i, d in enumerate(seen[: len(want)])] == want
    assert out.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- reference


def test_reference_single_pixel_hand_computed():
    """One 2x2 level, one point: bilinear weights by hand with align_corners=False."""
    value = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)  # pixels (y, x) row-major
    shapes = torch.tensor([[2, 2]])
    starts = torch.tensor([0])
    # pixel x = 0.5 * 2 - 0.5 = 0.5, y = 0.25 * 2 - 0.5 = 0 -> halfway between pixels 1 and 2
    loc = torch.tensor([0.5, 0.25]).view(1, 1, 1, 1, 1, 2)
    weight = torch.tensor([0.5]).view(1, 1, 1, 1, 1)
    out = reference.ms_deform_attn(value, shapes, starts, loc, weight)
    torch.testing.assert_close(out, torch.tensor([[[0.75]]]))


@pytest.mark.parametrize("op", list(OPS))
def test_reference_gradcheck_float64(op):
    _, ref = OPS[op]
    value, shapes, starts, loc, attention = make_inputs(
        2, 3, 2, 3, [(3, 2), (1, 1)], 2, torch.float64
    )
    leaves = [t.requires_grad_() for t in (value, loc, attention)]

    def fn(v, x, a):
        return ref(v, shapes, starts, x, a)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("op", list(OPS))
def test_public_gradcheck_float64_through_custom_op(op):
    """float64 takes the reference inside the registered op: checks the backward op wiring."""
    fn, _ = OPS[op]
    value, shapes, starts, loc, attention = make_inputs(
        1, 2, 2, 3, [(2, 3), (1, 2)], 2, torch.float64
    )
    leaves = [t.requires_grad_() for t in (value, loc, attention)]
    assert torch.autograd.gradcheck(
        lambda v, x, a: fn(v, shapes, starts, x, a), leaves, eps=1e-6, atol=1e-5
    )


# ----------------------------------------------------------------------------- registration


def _opcheck_args(dtype=torch.float32):
    """Forward args with grads wanted, and backward args: ``(grad_out, *inputs)``."""
    value, shapes, starts, loc, attention = make_inputs(1, 3, 2, 5, [(2, 3), (1, 1)], 2, dtype)
    fwd = [t.clone().requires_grad_() for t in (value, loc, attention)]
    grad_out = torch.randn(1, 3, 2 * 5, dtype=dtype)
    return (fwd[0], shapes, starts, fwd[1], fwd[2]), (
        grad_out,
        value,
        shapes,
        starts,
        loc,
        attention,
    )


@pytest.mark.parametrize(
    "backend",
    ["torch", pytest.param("triton", marks=needs_triton_cpu)],
)
@pytest.mark.parametrize("op", ["ms_deform_attn", "ms_deform_attn_fused"])
def test_opcheck(op, backend):
    fwd_args, bwd_args = _opcheck_args()
    with use_backend(backend):
        torch.library.opcheck(getattr(torch.ops.gmpvis, op).default, fwd_args)
        torch.library.opcheck(getattr(torch.ops.gmpvis, f"{op}_backward").default, bwd_args)


@pytest.mark.parametrize("op", list(OPS))
def test_torch_compile_fullgraph(op):
    fn, _ = OPS[op]
    value, shapes, starts, loc, attention = make_inputs(2, 3, 2, 4, [(3, 2), (2, 2)], 2)

    def step(v, x, a):
        return (fn(v, shapes, starts, x, a) * 1.5).sum()

    # aot_eager traces the op through its fake and AOT autograd like inductor does, without
    # spending ~15 s compiling C++ for the surrounding elementwise ops on this CPU.
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with use_backend("torch"):
        leaves = [t.clone().requires_grad_() for t in (value, loc, attention)]
        eager_leaves = [t.clone().requires_grad_() for t in (value, loc, attention)]
        got = compiled(*leaves)
        want = step(*eager_leaves)
        got.backward()
        want.backward()
    torch.testing.assert_close(got, want)
    for a, b in zip(leaves, eager_leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


# ----------------------------------------------------------------------------- errors


def test_value_errors_name_the_argument():
    value, shapes, starts, loc, attention = make_inputs(1, 3, 2, 4, [(3, 2), (1, 1)], 2)
    cases = {
        "value": (value[0], shapes, starts, loc, attention),
        "spatial_shapes": (value, shapes.float(), starts, loc, attention),
        "level_start_index": (value, shapes, starts[:1], loc, attention),
        "sampling_locations": (value, shapes, starts, loc[:, :, :1], attention),
        "attention_weights": (value, shapes, starts, loc, attention[..., :1]),
    }
    for name, args in cases.items():
        with pytest.raises(ValueError, match=name):
            ms_deform_attn(*args)
    with pytest.raises(ValueError, match="attention_logits"):
        ms_deform_attn_fused(value, shapes, starts, loc, attention.int())
    with pytest.raises(ValueError, match=r"sampling_locations.*\[B=1, Q=3, H=2, L=2, P=2, 2\]"):
        ms_deform_attn(value, shapes, starts, loc[..., :1], attention)


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    inputs = make_inputs(1, 2, 1, 4, [(2, 2)], 1)
    with use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        ms_deform_attn(*inputs)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", list(OPS))
def test_gpu_model_shape_matches_reference(op, dtype):
    """Encoder-like shape: 4 levels, 4 points, 8 heads, D = 32, partly outside locations."""
    shapes = [(45, 80), (23, 40), (12, 20), (6, 10)]
    inputs = make_inputs(2, 1000, 8, 32, shapes, 4, dtype, device="cuda")
    assert_matches_reference(op, inputs, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("op", list(OPS))
def test_gpu_odd_shapes(op):
    inputs = make_inputs(3, 77, 3, 12, [(7, 9), (4, 5), (1, 1)], 3, device="cuda")
    assert_matches_reference(op, inputs, torch.float32)


# ------------------------------------------------------------------- bad levels, non-finite


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton_cpu)])
@pytest.mark.parametrize("entry", ["weights", "fused", "offsets"])
def test_levels_inconsistent_with_value_raise(backend, entry):
    """spatial_shapes must cover S and level_start_index must be their cumulative sums
    (the Triton path returned a wrong answer): a ValueError on both backends."""
    value, shapes, starts, ref, off, attn = make_offset_inputs(1, 3, 2, 4, [(2, 3), (1, 2)], 2, 2)
    loc = reference.sampling_locations(shapes, ref, off).float()

    def call(sh, st):
        if entry == "offsets":
            return ms_deform_attn_offsets(value, sh, st, ref, off, attn)
        fn = ms_deform_attn_fused if entry == "fused" else ms_deform_attn
        return fn(value, sh, st, loc, attn)

    with use_backend(backend):
        call(shapes, starts)  # consistent: fine
        with pytest.raises(ValueError, match=r"cover 7 positions but value has S=8"):
            call(torch.tensor([[2, 3], [1, 1]]), starts)
        with pytest.raises(ValueError, match=r"level_start_index must be \[0, 6\]"):
            call(shapes, torch.tensor([0, 5]))
        with pytest.raises(ValueError, match=r"spatial_shapes must be >= 0"):
            call(torch.tensor([[-2, 3], [-1, 2]]), starts)


def _same_nan_and_values(a, b):
    assert torch.equal(a.isnan(), b.isnan())
    torch.testing.assert_close(a.nan_to_num(0.0), b.nan_to_num(0.0), **TOL[torch.float32])


@pytest.mark.filterwarnings("ignore:.*(encountered|All-NaN).*:RuntimeWarning")  # interpreter
@needs_triton_cpu
@pytest.mark.parametrize("where", ["value", "location_nan", "location_inf", "logit"])
def test_non_finite_inputs_same_on_both_backends(where):
    """NaN in value reaches the samples that read it; a NaN location makes its (query, head)
    NaN (never an index); an infinite location lies outside and contributes 0; a NaN logit
    makes its (query, head) NaN."""
    value, shapes, starts, loc, logits = make_inputs(1, 6, 2, 4, [(3, 4), (2, 2)], 2)
    if where == "value":
        value[0, 5, 1] = float("nan")
    elif where == "location_nan":
        loc[0, 2, 1, 0, 1, 0] = float("nan")
    elif where == "location_inf":
        loc[0, 2, 1, 0, 1] = torch.tensor([float("inf"), -float("inf")])
    else:
        logits[0, 4, 0, 1, 0] = float("nan")
    args = (value, shapes, starts, loc, logits)
    with use_backend("triton"):
        out = ms_deform_attn_fused(*args)
    ref = reference.ms_deform_attn_fused(*args)
    _same_nan_and_values(out, ref)
    assert out.isnan().any() == (where != "location_inf")
    if where == "location_inf":  # the same as a location far outside
        far = loc.clone()
        far[0, 2, 1, 0, 1] = 50.0
        torch.testing.assert_close(out, reference.ms_deform_attn_fused(value, shapes, starts,
                                                                       far, logits))  # fmt: skip
    if where != "value":  # only that (query, head) is touched
        q = 2 if where.startswith("location") else 4
        h = 1 if where.startswith("location") else 0
        nan = out.view(1, 6, 2, 4).isnan().any(-1)[0]
        assert nan.sum() == (where != "location_inf") and (nan[q, h] or where == "location_inf")
