"""The CPU backend's own kernel factories (runtime/cpu_kernels.py) against the references."""
from __future__ import annotations

import gc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from netlang.ops.registry import get_op
from netlang.runtime import cpu_kernels

F32 = np.dtype(np.float32)


def conv_attrs(stride=1, padding="SAME"):
    return {"stride": (stride, stride), "padding": padding, "dilation": (1, 1)}


def test_filter_gradient_reuses_the_forward_patches_of_its_executor():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 9, 9, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    state, attrs = cpu_kernels.KernelState(), conv_attrs(stride=2)
    forward = cpu_kernels.conv2d([x.shape, w.shape], [F32, F32], attrs, state)
    y = forward(x, w)
    g = rng.standard_normal(y.shape).astype(np.float32)
    backward = cpu_kernels.conv2d_backprop_filter([x.shape, g.shape, w.shape], [F32] * 3,
                                                  attrs, state)
    reused = backward(x, g, w)
    assert state.patches.hits == 1
    fresh = backward(x, g, w)
    assert state.patches.hits == 1                      # handed out once
    np.testing.assert_array_equal(reused, fresh)
    np.testing.assert_array_equal(fresh, get_op("conv2d_backprop_filter").kernel(
        np, x, g, w, **attrs))
    forward(x, w)
    key = id(x)
    assert key in state.patches.entries
    del x
    gc.collect()
    assert key not in state.patches.entries             # dies with its array
    assert cpu_kernels.KernelState().patches.entries == {}   # nothing shared across executors


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), hw=st.integers(3, 9), cin=st.sampled_from([1, 3, 8, 12, 20]),
       cout=st.integers(1, 6), k=st.sampled_from([1, 2, 3]), stride=st.sampled_from([1, 2]),
       padding=st.one_of(st.sampled_from(["SAME", "VALID"]),
                         st.just(((1, 0), (0, 2))), st.just(((2, 2), (1, 1)))))
def test_conv_factories_equal_the_reference_kernels(n, hw, cin, cout, k, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, hw, hw, cin)).astype(np.float32)
    w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    attrs = conv_attrs(stride, padding)
    state = cpu_kernels.KernelState()
    want = get_op("conv2d").kernel(np, x, w, **attrs)
    got = cpu_kernels.conv2d([x.shape, w.shape], [F32, F32], attrs, state)(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    g = rng.standard_normal(want.shape).astype(np.float32)
    for op, args in (("conv2d_backprop_input", (g, w, x)),
                     ("conv2d_backprop_filter", (x, g, w))):
        ref = get_op(op).kernel(np, *args, **attrs)
        run = getattr(cpu_kernels, op)([a.shape for a in args], [F32] * 3, attrs, state)
        out = run(*args)
        assert out.shape == ref.shape and out.dtype == ref.dtype
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_fused_factory_equals_the_reference_interpreter():
    rng = np.random.default_rng(3)
    expr = (("add", ("x0", "x1"), ()), ("relu", ("t0",), ()), ("mul", ("t1", "x0"), ()))
    x = rng.standard_normal((4, 5, 5, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    run = cpu_kernels.fused([x.shape, b.shape], [F32, F32], {"expr": expr},
                            cpu_kernels.KernelState())
    np.testing.assert_array_equal(run(x, b), get_op("fused").kernel(np, x, b, expr=expr))


def test_without_onednn_the_cpu_runs_its_own_kernels_and_says_why(monkeypatch):
    import netlang
    from netlang.runtime import backend, onednn

    broken = onednn.Library(candidates=lambda: ["/nonexistent/libdnnl.so.3"])
    monkeypatch.setattr(onednn, "LIBRARY", broken)
    backend._cpu_backend.cache_clear()
    try:
        cpu = backend.get_backend("cpu")
        assert cpu.library == "" and "conv2d" in cpu.factories
        assert cpu.describe().startswith("cpu (netlang's kernels; oneDNN is not used (oneDNN "
                                         "not loaded: ")
        model = netlang.compile("network n { input x: f32[N, 6, 6, 2]\n"
                                "  output y = conv2d(x, 3, kernel=3, padding=same) }")
        x = np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype(np.float32)
        got = model.session(kernels="default").run("y", {"x": x})
        want = model.session(kernels="numpy").run("y", {"x": x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        backend._cpu_backend.cache_clear()


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
       data=st.data(), keepdims=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_mean_grad_writes_the_references_values_into_its_buffer(shape, data, keepdims,
                                                                dtype, seed):
    """The reference returns a broadcast view of g / count; the factory writes the same
    bits into the buffer it is given (every place of ``like``, whatever was there)."""
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True)
                     .map(sorted).map(tuple))
    attrs = {"axis": axes, "keepdims": keepdims}
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    g_shape = kept if keepdims else tuple(d for i, d in enumerate(shape) if i not in axes)
    g = np.asarray(np.random.default_rng(seed).standard_normal(g_shape) * 100, dtype)
    like = np.zeros(shape, dtype)
    run = cpu_kernels.mean_grad([g.shape, like.shape], [g.dtype, like.dtype], attrs, None)
    want = get_op("mean_grad").kernel(np, g, like, **attrs)
    out = np.full(shape, np.nan, dtype)
    assert run(g, like, out=out) is out
    np.testing.assert_array_equal(out, want)
    assert run(g, like).dtype == dtype and run(g, like).flags.c_contiguous
    assert cpu_kernels.mean_grad([g.shape, (0, *shape)], [g.dtype] * 2,
                                 {"axis": 0, "keepdims": False}, None) is None  # empty: zeros
