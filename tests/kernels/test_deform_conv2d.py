"""deform_conv2d: Triton kernels (interpreter on CPU) vs the reference, reference vs torchvision.

Tolerances, as ``max|a - b| <= ATOL + RTOL * max|b|`` per tensor:
- float32: 1e-5 / 1e-5 (the interpreter's dot is exact float32; on a GPU tf32x3 is close).
- float16: 1e-3 / 1e-2 (the sampled tile is rounded to float16 before the tensor-core dot).
- float64 reference vs torchvision: 1e-10.
"""

import pytest
import torch
import torchvision

from gmpvis.kernels import reference, use_backend
from gmpvis.kernels._backend import resolve
from gmpvis.kernels.ops import deform_conv2d as dc

TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-2), torch.bfloat16: (1e-2, 3e-2)}
NAMES = ("input", "offset", "weight", "bias", "mask")


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def make_inputs(n, c, h, w, c_out, kh, kw, *, groups=1, g_off=1, stride=1, padding=0,
                dilation=1, mask=True, bias=True, dtype=torch.float32, device="cpu",
                spread=2.0):  # fmt: skip
    """Random inputs; offsets of ~``spread`` pixels so samples hit borders and the outside."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k = kh * kw
    opts = dict(dtype=dtype, device=device)
    args = {
        "input": torch.randn(n, c, h, w, **opts),
        "offset": spread * torch.randn(n, 2 * g_off * k, h_out, w_out, **opts),
        "weight": torch.randn(c_out, c // groups, kh, kw, **opts) / (c // groups * k) ** 0.5,
        "bias": torch.randn(c_out, **opts) if bias else None,
        "mask": torch.rand(n, g_off * k, h_out, w_out, **opts) if mask else None,
    }
    for t in args.values():
        if t is not None:
            t.requires_grad_()
    return args, dict(stride=stride, padding=padding, dilation=dilation)


def _run(fn, args, conf, grad_out=None):
    out = fn(args["input"], args["offset"], args["weight"], args["bias"], mask=args["mask"], **conf)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    names = [k for k in NAMES if args[k] is not None]
    grads = torch.autograd.grad(out, [args[k] for k in names], grad_out)
    return out, dict(zip(names, grads, strict=True)), grad_out


def _assert_close(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    assert actual.dtype == expected.dtype, what
    assert actual.shape == expected.shape, what
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert err <= atol + rtol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


# (n, c, h, w, c_out, kh, kw, options): odd channel counts, every conv feature at least once
CASES = {
    "3x3_pad_odd_channels": (1, 5, 6, 7, 6, 3, 3, dict(padding=1)),
    "groups2_goff3_stride2_nonsquare": (
        2, 6, 7, 5, 4, 3, 2, dict(groups=2, g_off=3, stride=2, padding=(1, 0), bias=False)
    ),
    "dilation2_goff2_no_mask": (
        1, 4, 9, 8, 4, 2, 3, dict(g_off=2, padding=2, dilation=2, mask=False)
    ),
    "groups4_goff2_across_groups": (1, 8, 4, 5, 12, 2, 2, dict(groups=4, g_off=2, padding=1)),
    "1x1_spatial_input": (2, 3, 1, 1, 5, 3, 3, dict(padding=1)),
    "1x1_kernel_stride_tuple": (1, 7, 5, 6, 3, 1, 1, dict(stride=(2, 1), mask=False, bias=False)),
    "wide_c_out_chunked": (1, 20, 4, 3, 130, 2, 2, dict(padding=1)),
}  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_triton_matches_reference(case, dtype):
    if dtype == torch.float16 and case == "wide_c_out_chunked":
        pytest.skip("float32 covers the chunked-C_out path; keeps the file fast")
    n, c, h, w, c_out, kh, kw, opts = CASES[case]
    args, conf = make_inputs(n, c, h, w, c_out, kh, kw, dtype=dtype, **opts)
    out_ref, grads_ref, grad_out = _run(reference.deform_conv2d, args, conf)
    with use_backend("triton"):
        assert resolve(args["input"].device, "deform_conv2d") == "triton"
        out, grads, _ = _run(dc.deform_conv2d, args, conf, grad_out)
    _assert_close(out, out_ref, dtype, "output")
    assert set(grads) == set(grads_ref)
    for name, g in grads.items():
        assert g.abs().max() > 0, f"grad {name} is all zero: the case does not test it"
        _assert_close(g, grads_ref[name], dtype, f"grad {name}")


def _small_tiles(monkeypatch, **data):
    """16-wide channel tiles in every kernel (and ``data`` overrides for the data gradient)."""
    config = dc._config

    def small(geo, dtype, arch):
        cfg = config(geo, dtype, arch)
        tiles = {"BLOCK_C": 16, "BLOCK_CO": 16}
        return {
            "fwd": {**cfg["fwd"], **tiles},
            "data": {**cfg["data"], **tiles, **data},
            "weight": {**cfg["weight"], **tiles},
        }

    monkeypatch.setattr(dc, "_config", small)


@pytest.mark.parametrize("g_off,channel_block", [(2, None), (1, 16)])
def test_triton_small_tiles_cover_every_loop(monkeypatch, g_off, channel_block):
    """16-wide tiles on 40 channels: several channel chunks per offset group, C_in tiles of
    the weight kernel straddling two offset groups, several C_out tiles everywhere; with one
    offset group, the data gradient split in channel blocks of 16 (16 + 16 + 8)."""
    _small_tiles(monkeypatch, **({} if channel_block is None else {"CB": channel_block}))
    args, conf = make_inputs(1, 40, 3, 4, 36, 1, 2, g_off=g_off, padding=(1, 0))
    out_ref, grads_ref, grad_out = _run(reference.deform_conv2d, args, conf)
    with use_backend("triton"):
        out, grads, _ = _run(dc.deform_conv2d, args, conf, grad_out)
    _assert_close(out, out_ref, torch.float32, "output")
    for name, g in grads.items():
        _assert_close(g, grads_ref[name], torch.float32, f"grad {name}")


def test_triton_samples_far_outside_are_zero():
    """Offsets far beyond the image (huge, clamped before the int cast) give bias only."""
    args, conf = make_inputs(1, 3, 4, 5, 2, 3, 3, padding=1, spread=0.0)
    with torch.no_grad():
        args["offset"].fill_(1e9)
    with use_backend("triton"):
        out, grads, _ = _run(dc.deform_conv2d, args, conf)
    torch.testing.assert_close(out, args["bias"].detach()[None, :, None, None].expand_as(out))
    for name in ("input", "offset", "weight", "mask"):
        assert grads[name].abs().max() == 0, name


def test_triton_non_contiguous_inputs():
    """Strided views (channels-last input, sliced offset/mask as in the seg head) are accepted."""
    args, conf = make_inputs(2, 4, 5, 6, 3, 3, 3, padding=1)
    om = torch.randn(2, 27 + 5, 5, 6, requires_grad=True)  # offset and mask sliced off one map
    x = args["input"].detach().to(memory_format=torch.channels_last).requires_grad_()
    views = dict(args, input=x, offset=om[:, :18], mask=om[:, 18:27].sigmoid())
    assert not views["input"].is_contiguous() and not views["offset"].is_contiguous()
    out_ref, grads_ref, grad_out = _run(reference.deform_conv2d, views, conf)
    with use_backend("triton"):
        out, grads, _ = _run(dc.deform_conv2d, views, conf, grad_out)
    _assert_close(out, out_ref, torch.float32, "output")
    for name, g in grads.items():
        _assert_close(g, grads_ref[name], torch.float32, f"grad {name}")


def test_reference_matches_torchvision_float64():
    for name, (n, c, h, w, c_out, kh, kw, opts) in CASES.items():
        args, conf = make_inputs(n, c, h, w, c_out, kh, kw, dtype=torch.float64, **opts)
        out_ref, grads_ref, grad_out = _run(reference.deform_conv2d, args, conf)
        out_tv, grads_tv, _ = _run(torchvision.ops.deform_conv2d, args, conf, grad_out)
        torch.testing.assert_close(out_ref, out_tv, atol=1e-10, rtol=1e-10, msg=name)
        for key, g in grads_ref.items():
            torch.testing.assert_close(g, grads_tv[key], atol=1e-10, rtol=1e-10, msg=name + key)


def test_reference_gradcheck_float64():
    args, conf = make_inputs(1, 4, 4, 3, 4, 2, 3, groups=2, g_off=2, padding=1, stride=(1, 2),
                             dtype=torch.float64, spread=1.0)  # fmt: skip

    def fn(x, off, w, b, m):
        return reference.deform_conv2d(x, off, w, b, mask=m, **conf)

    assert torch.autograd.gradcheck(fn, tuple(args[k] for k in NAMES))


def test_public_function_float64_goes_to_reference():
    args, conf = make_inputs(1, 3, 5, 4, 2, 3, 3, padding=1, dtype=torch.float64)
    with use_backend("triton"):
        out, grads, grad_out = _run(dc.deform_conv2d, args, conf)
    out_tv, grads_tv, _ = _run(torchvision.ops.deform_conv2d, args, conf, grad_out)
    torch.testing.assert_close(out, out_tv)
    for key, g in grads.items():
        torch.testing.assert_close(g, grads_tv[key])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opcheck(backend):
    # tiny for the interpreter: opcheck runs each op about ten times
    args, conf = make_inputs(1, 2, 3, 4, 2, 2, 2, g_off=2, padding=1, stride=(2, 1))
    conv = ([2, 1], [1, 1], [1, 1])
    fwd = (args["input"], args["offset"], args["weight"], args["bias"], *conv, args["mask"])
    detached = [t.detach() if isinstance(t, torch.Tensor) else t for t in fwd]
    grad_out = torch.randn(1, 2, 2, 5)
    with use_backend(backend):
        torch.library.opcheck(torch.ops.gmpvis.deform_conv2d.default, fwd)
        torch.library.opcheck(
            torch.ops.gmpvis.deform_conv2d_backward.default, (grad_out, *detached)
        )
        if backend == "torch":
            no_opt = (*detached[:3], None, *conv, None)
            bwd = torch.ops.gmpvis.deform_conv2d_backward.default
            torch.library.opcheck(bwd, (grad_out, *no_opt))


def test_reference_output_is_channels_last_as_the_fake_says():
    """Batch > 1: the reference's einsum output is permuted in memory; the op must return the
    channels-last layout its fake implementation promises (torch.compile relies on it)."""
    args, conf = make_inputs(2, 4, 4, 4, 3, 3, 3, padding=0)
    fwd = (args["input"], args["offset"], args["weight"], args["bias"], [1, 1], [0, 0], [1, 1],
           args["mask"])  # fmt: skip
    with use_backend("torch"):
        out = dc.deform_conv2d(*[args[k] for k in NAMES][:4], mask=args["mask"])
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.library.opcheck(torch.ops.gmpvis.deform_conv2d.default, fwd)


def test_torch_compile_fullgraph():
    args, conf = make_inputs(2, 3, 5, 4, 4, 3, 3, padding=1)

    def fn(x, off, w, b, m):
        return dc.deform_conv2d(x, off, w, b, mask=m, **conf).square().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    inputs = [args[k] for k in NAMES]
    with use_backend("torch"):
        loss = compiled(*inputs)
        grads = torch.autograd.grad(loss, inputs)
        loss_ref = fn(*inputs)
        grads_ref = torch.autograd.grad(loss_ref, inputs)
    torch.testing.assert_close(loss, loss_ref)
    for g, r in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("layout", ["channels_last", "permuted"])
def test_torch_compile_inductor_with_strided_inputs(layout, fresh_inductor):
    """Inductor checks every custom op output against its fake's strides: channels-last or
    permuted input, offsets and mask sliced from one map (the seg head's views), forward and
    backward, Triton through the interpreter."""
    args, conf = make_inputs(2, 4, 5, 6, 3, 3, 3, padding=1)
    x = args["input"].detach()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)  # [C, N, H, W] in memory
    om = torch.cat([args["offset"].detach(), args["mask"].detach()], 1)
    om = om.contiguous(memory_format=torch.channels_last)

    def fn(x, om, w, b):
        return (dc.deform_conv2d(x * 1.0, om[:, :18], w, b, mask=om[:, 18:], **conf) ** 2).sum()

    inputs = [x, om, args["weight"].detach(), args["bias"].detach()]
    leaves = [t.clone().requires_grad_() for t in inputs]
    with use_backend("triton"):
        loss = torch.compile(fn, fullgraph=True)(*leaves)
        grads = torch.autograd.grad(loss, leaves)
    ref_leaves = [t.clone().requires_grad_() for t in inputs]
    with use_backend("torch"):
        loss_ref = fn(*ref_leaves)
        grads_ref = torch.autograd.grad(loss_ref, ref_leaves)
    _assert_close(loss, loss_ref, torch.float32, "loss")
    for name, g, r in zip(("input", "offset+mask", "weight", "bias"), grads, grads_ref,
                          strict=True):  # fmt: skip
        _assert_close(g, r, torch.float32, name)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_output_and_input_grad_are_channels_last(backend):
    """Both backends return the layout the fakes promise, whatever the input's layout."""
    args, conf = make_inputs(2, 3, 4, 5, 4, 3, 3, padding=1)
    with use_backend(backend):
        out, grads, _ = _run(dc.deform_conv2d, args, conf)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert grads["input"].is_contiguous(memory_format=torch.channels_last)
    assert grads["offset"].is_contiguous() and grads["weight"].is_contiguous()


def test_deterministic_mode_raises_on_triton_backward(deterministic):
    """The Triton backward scatters grad_input with atomics: under deterministic mode it
    raises torch's error naming the op (a warning with warn_only); the forward runs."""
    args, conf = make_inputs(1, 3, 4, 4, 2, 3, 3, padding=1)

    def run():
        with use_backend("triton"):
            _run(dc.deform_conv2d, args, conf)

    deterministic.raises(run, "deform_conv2d backward")


def test_deterministic_mode_reference_backward_is_reproducible(deterministic):
    args, conf = make_inputs(1, 3, 4, 4, 2, 3, 3, padding=1)
    go = torch.ones(1, 2, 4, 4)

    def run():
        with use_backend("torch"):
            return _run(dc.deform_conv2d, args, conf, go)[1]

    first, second = deterministic.twice(run)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_autocast_gives_the_autocast_dtype(op_dtypes):
    """Under autocast (bfloat16) every float operand reaches the op in bfloat16, though the
    caller passes float32 input and weights (GroupNorm and parameters stay float32)."""
    args, conf = make_inputs(1, 3, 4, 4, 2, 3, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16), op_dtypes, use_backend("torch"):
        out = dc.deform_conv2d(args["input"], args["offset"].bfloat16(), args["weight"],
                               args["bias"], mask=args["mask"], **conf)  # fmt: skip
    seen = op_dtypes.calls["deform_conv2d"]
    assert [seen[i] for i in (0, 1, 2, 3, 7)] == [torch.bfloat16] * 5
    assert out.dtype == torch.bfloat16


def test_weight_gradient_splits_are_summed_in_a_fixed_order(monkeypatch):
    """The weight gradient is reduced over pixel splits without atomics (one slice per
    split, then a sum): with many splits it still matches the reference."""
    monkeypatch.setattr(dc, "_split_count", lambda programs, tiles, arch: tiles)
    args, conf = make_inputs(2, 4, 9, 8, 3, 3, 3, padding=1)
    out_ref, grads_ref, grad_out = _run(reference.deform_conv2d, args, conf)
    with use_backend("triton"):
        _, grads, _ = _run(dc.deform_conv2d, args, conf, grad_out)
    _assert_close(grads["weight"], grads_ref["weight"], torch.float32, "grad weight")


BAD = {
    "input": (lambda a: a.update(input=a["input"][0]), "input"),
    "weight_channels": (lambda a: a.update(weight=torch.randn(4, 2, 3, 3)), "weight"),
    "weight_dtype": (lambda a: a.update(weight=a["weight"].double()), "weight"),
    "offset_channels": (lambda a: a.update(offset=torch.randn(1, 17, 4, 5)), "offset"),
    "offset_size": (lambda a: a.update(offset=torch.randn(1, 18, 3, 5)), "offset"),
    "offset_groups": (lambda a: a.update(offset=torch.randn(1, 36, 4, 5)), "offset"),
    "mask": (lambda a: a.update(mask=torch.rand(1, 18, 4, 5)), "mask"),
    "bias": (lambda a: a.update(bias=torch.randn(5)), "bias"),
    "stride": (lambda a: a.update(stride=0), "stride"),
    "padding": (lambda a: a.update(padding=(1, -1)), "padding"),
    "dilation": (lambda a: a.update(dilation=(1, 2, 3)), "dilation"),
    "too_small": (lambda a: a.update(padding=0, input=torch.randn(1, 3, 2, 5)), "too small"),
}


@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
def test_value_errors_name_the_argument(bad):
    kwargs = dict(
        input=torch.randn(1, 3, 4, 5), offset=torch.randn(1, 18, 4, 5),
        weight=torch.randn(4, 3, 3, 3), bias=torch.randn(4), mask=torch.rand(1, 9, 4, 5),
        padding=1,
    )  # fmt: skip
    change, needle = BAD[bad]
    change(kwargs)
    with pytest.raises(ValueError, match=needle):
        dc.deform_conv2d(**kwargs)


def test_triton_without_interpreter_raises(monkeypatch):
    args, conf = make_inputs(1, 3, 4, 4, 2, 3, 3, padding=1)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        _run(dc.deform_conv2d, args, conf)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape",
    [
        (2, 64, 45, 80, 64, 3, 3, dict(padding=1)),
        (2, 96, 23, 40, 130, 3, 3, dict(groups=2, g_off=4, padding=2, dilation=2)),
        (1, 256, 17, 33, 256, 3, 3, dict(stride=2, padding=1, mask=False)),
        (1, 300, 12, 20, 600, 1, 3, dict(g_off=3, padding=(0, 1))),
    ],
    ids=["model", "groups_dilation", "c256_stride2", "wide_c_out"],
)
def test_gpu_matches_reference(shape, dtype):
    n, c, h, w, c_out, kh, kw, opts = shape
    args, conf = make_inputs(n, c, h, w, c_out, kh, kw, dtype=dtype, device="cuda", **opts)
    out_ref, grads_ref, grad_out = _run(reference.deform_conv2d, args, conf)
    with use_backend("triton"):
        out, grads, _ = _run(dc.deform_conv2d, args, conf, grad_out)
    # reductions over thousands of terms (tf32x3 dots, atomics in any order): 10x the tolerance
    atol, rtol = TOL[dtype]
    for name, a, b in [("output", out, out_ref)] + [(k, grads[k], grads_ref[k]) for k in grads]:
        err = (a.double() - b.double()).abs().max().item()
        scale = b.double().abs().max().item()
        assert err <= 10 * (atol + rtol * scale), f"{name}: {err:.3g} (scale {scale:.3g})"


@pytest.mark.gpu
def test_gpu_tf32_mode(monkeypatch):
    """``allow_tf32`` switches float32 dots to one TF32 pass: TF32-level agreement only."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    args, conf = make_inputs(2, 64, 45, 80, 64, 3, 3, padding=1, device="cuda")
    out_ref, grads_ref, grad_out = _run(reference.deform_conv2d, args, conf)
    with use_backend("triton"):
        out, grads, _ = _run(dc.deform_conv2d, args, conf, grad_out)
    for name, a, b in [("output", out, out_ref)] + [(k, grads[k], grads_ref[k]) for k in grads]:
        err = (a - b).abs().max().item()
        assert err <= 1e-2 * b.abs().max().item(), name


# ----------------------------------------------------------------------------- non-finite inputs
# The policy (gmpvis.kernels.reference's docstring): NaN propagates (a NaN offset makes its
# samples NaN, never an index), an infinite offset lies outside. Both backends alike.


@pytest.mark.filterwarnings("ignore:.*(encountered|All-NaN).*:RuntimeWarning")  # interpreter
@pytest.mark.parametrize("where", ["offset_nan", "offset_inf", "mask_nan", "input_nan"])
def test_non_finite_inputs_same_on_both_backends(where):
    """The reference indexed out of bounds on a NaN offset; now both backends agree: NaN at
    the output pixels that sample it, 0 contribution from an infinite offset."""
    args, conf = make_inputs(1, 3, 5, 6, 2, 3, 3, padding=1)
    with torch.no_grad():
        if where == "offset_nan":
            args["offset"][0, 4, 2, 3] = float("nan")  # tap 2's y at output pixel (2, 3)
        elif where == "offset_inf":
            args["offset"][0, 6, 1, 1] = float("inf")
        elif where == "mask_nan":
            args["mask"][0, 5, 4, 0] = float("nan")
        else:
            args["input"][0, 1, 0, 0] = float("nan")  # a corner pixel
    call = [args[k] for k in ("input", "offset", "weight", "bias")]
    with use_backend("triton"):
        out = dc.deform_conv2d(*call, mask=args["mask"], **conf)
    ref = reference.deform_conv2d(*call, mask=args["mask"], **conf)
    assert torch.equal(out.isnan(), ref.isnan())
    _assert_close(out.nan_to_num(0.0), ref.nan_to_num(0.0), torch.float32, "finite part")
    if where == "offset_inf":
        assert not out.isnan().any()
        far = args["offset"].detach().clone()
        far[0, 6, 1, 1] = 1e6  # the same as far outside
        want = reference.deform_conv2d(call[0], far, *call[2:], mask=args["mask"], **conf)
        _assert_close(out, want, torch.float32, "inf offset")
    elif where in ("offset_nan", "mask_nan"):
        pixel = (2, 3) if where == "offset_nan" else (4, 0)
        nan = out.isnan().any(1)[0]
        assert nan[pixel] and nan.sum() == 1
    else:
        assert out.isnan().any()
