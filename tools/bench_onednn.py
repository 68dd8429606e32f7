"""Per-layer times of the conv, pool, batchnorm and matmul kernels of the seed specs: NumPy
reference vs oneDNN vs PyTorch (channels_last; when torch imports), and the OpenMP
wait-policy test.

    python3 tools/bench_onednn.py [--specs specs/mnist.net ...] [--batch N] [--repeats 21]
    python3 tools/bench_onednn.py --threads [--repeats 21]

The layers are read from each spec's training graph (forward and both gradients), one row per
distinct (op, shapes, attributes), with the spec's batch size unless --batch is given.  For
each row the variants run interleaved (one call of each per round) and the median of the
rounds is printed in ms (the ``pad`` column shows a conv's or pool's padding, a matmul's
transposes as ``Ta``/``Tb``; a matmul oneDNN declines for its size is timed through the
factory without the threshold, flagged ``<min``).  oneDNN's primitive is built once per
row, outside the timing, as the executor does.  PyTorch's maxpool_grad includes its forward
(for the argmax indices), as ours does.  ``--threads`` times an interleaved oneDNN-conv +
NumPy-GEMM step in fresh processes under each OMP_WAIT_POLICY (libgomp reads it at load
time).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netlang import compiler
from netlang.ops.conv import CONV_ATTRS, window_geometry
from netlang.ops.pool import pool_geometry
from netlang.ops.registry import get_op
from netlang.runtime import onednn
from netlang.runtime.onednn_kernels import matmul, onednn_kernels
from netlang.runtime.threads import BLAS_THREADS, configure_cpu_threads

SPECS = ["specs/mnist.net", "specs/mnist_small.net", "specs/residual.net"]
OPS = ("conv2d", "conv2d_backprop_input", "conv2d_backprop_filter", "maxpool", "maxpool_grad",
       "avgpool", "avgpool_grad", "batchnorm_apply", "batchnorm_grad_gamma", "matmul")


def spec_layers(path: str, batch: int | None) -> tuple[int, list[tuple]]:
    """(batch, [(op, input shapes, attrs)]) of the spec's training graph, deduplicated."""
    text = (ROOT / path).read_text()
    found = re.search(r"^\s*batch\s+(\d+)", text, re.MULTILINE)
    batch = batch or (int(found.group(1)) if found else 64)
    graph, _ = compiler.prepare(compiler.load(str(ROOT / path)))
    graph = compiler.training_graph(graph)
    layers, seen = [], set()
    for node in graph.nodes.values():
        if node.op not in OPS:
            continue
        shapes = tuple(tuple(batch if not isinstance(d, int) else d
                             for d in graph.nodes[i].type.shape) for i in node.inputs)
        key = (node.op, shapes, tuple(sorted(node.attrs.items())))
        if key not in seen:
            seen.add(key)
            layers.append((node.op, shapes, dict(node.attrs)))
    return batch, layers


def inputs_for(op: str, shapes, attrs, rng) -> list[np.ndarray]:
    arrays = [rng.standard_normal(s, np.float32) for s in shapes]
    if op == "maxpool_grad":
        arrays[1] = get_op("maxpool").kernel(np, arrays[0], **attrs)
    if op.startswith("batchnorm"):
        x = arrays[1] if op == "batchnorm_grad_gamma" else arrays[0]
        axes = tuple(range(x.ndim - 1))
        arrays[1 if op == "batchnorm_apply" else 2] = x.mean(axes)
        arrays[2 if op == "batchnorm_apply" else 3] = x.var(axes)
    return arrays


# -- PyTorch channels_last twins ------------------------------------------------------------------

def torch_variant(op: str, arrays, attrs):
    """A no-argument callable running PyTorch's kernel on channels_last copies, or None when
    the case needs asymmetric padding (torch pads both sides alike) or has no twin here."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None

    def image(a):   # NHWC array -> NCHW-shaped tensor in channels_last memory
        return torch.from_numpy(a).permute(0, 3, 1, 2)

    def filt(w):    # [kh,kw,cin,cout] -> OIHW
        return torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    if op.startswith("conv2d"):
        a = {**CONV_ATTRS, **attrs}
        x_shape = arrays[2].shape if op == "conv2d_backprop_input" else arrays[0].shape
        w_shape = arrays[2].shape if op == "conv2d_backprop_filter" else arrays[1].shape
        gh, gw = window_geometry(op, x_shape[1:3], w_shape[:2], a["stride"], a["dilation"],
                                 a["padding"])
        if gh.before != gh.after or gw.before != gw.after:
            return None
        geo = {"stride": (gh.stride, gw.stride), "padding": (gh.before, gw.before),
               "dilation": (gh.dilation, gw.dilation)}
        if op == "conv2d":
            x, w = image(arrays[0]), filt(arrays[1])
            return lambda: F.conv2d(x, w, **geo)
        x = image(arrays[0] if op == "conv2d_backprop_filter" else arrays[2])
        g = image(arrays[1] if op == "conv2d_backprop_filter" else arrays[0])
        w = filt(arrays[2] if op == "conv2d_backprop_filter" else arrays[1])
        mask = (False, True, False) if op == "conv2d_backprop_filter" else (True, False, False)
        return lambda: torch.ops.aten.convolution_backward(
            g, x, w, None, geo["stride"], geo["padding"], geo["dilation"], False, (0, 0), 1,
            mask)
    if op in ("maxpool", "maxpool_grad", "avgpool", "avgpool_grad"):
        like = arrays[1] if op == "avgpool_grad" else arrays[0]
        gh, gw = pool_geometry(op, like.shape[1:3], attrs["window"], attrs["stride"],
                               attrs["padding"])
        if gh.before != gh.after or gw.before != gw.after:
            return None
        geo = {"kernel_size": (gh.k, gw.k), "stride": (gh.stride, gw.stride),
               "padding": (gh.before, gw.before)}
        if op == "maxpool":
            x = image(arrays[0])
            return lambda: F.max_pool2d(x, geo["kernel_size"], geo["stride"], geo["padding"])
        if op == "maxpool_grad":
            x, g = image(arrays[0]), image(arrays[2])
            back = torch.ops.aten.max_pool2d_with_indices_backward

            def run():
                _, idx = F.max_pool2d(x, geo["kernel_size"], geo["stride"], geo["padding"],
                                      return_indices=True)
                return back(g, x, geo["kernel_size"], geo["stride"], geo["padding"], (1, 1),
                            False, idx)
            return run
        if op == "avgpool":
            x = image(arrays[0])
            return lambda: F.avg_pool2d(x, geo["kernel_size"], geo["stride"], geo["padding"],
                                        count_include_pad=False)
        g, x = image(arrays[0]), image(arrays[1])
        return lambda: torch.ops.aten.avg_pool2d_backward(
            g, x, geo["kernel_size"], geo["stride"], geo["padding"], False, False, None)
    if op == "matmul":
        a, b = (torch.from_numpy(v) for v in arrays)
        a, b = (a.T if attrs.get("transpose_a") else a), (b.T if attrs.get("transpose_b") else b)
        return lambda: torch.matmul(a, b)
    if op == "batchnorm_apply" and arrays[0].ndim == 4:
        x, mean, var, gamma, beta = (torch.from_numpy(a) for a in arrays)
        x = x.permute(0, 3, 1, 2)
        return lambda: F.batch_norm(x, mean, var, gamma, beta, False, 0.0, attrs["epsilon"])
    return None


# -- timing ----------------------------------------------------------------------------------------

STAT = statistics.median


def interleaved_medians(variants: dict, repeats: int) -> dict[str, float]:
    """Median ms (``--min``: fastest) of each callable, one call of each per round (2
    warm-up rounds)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeats + 2):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: STAT(t) * 1e3 for name, t in times.items()}


def shape_text(shapes) -> str:
    return " ".join("x".join(map(str, s)) for s in shapes if len(s) > 1)


def attr_text(op: str, attrs: dict) -> str:
    if op == "matmul":
        return "".join(t for t, key in (("Ta", "transpose_a"), ("Tb", "transpose_b"))
                       if attrs.get(key)) or "-"
    return str(attrs.get("padding", "-"))[:5]


def onednn_variant(factory, op: str, shapes, attrs):
    """(run, note): the registered factory's kernel, or for a matmul it declines by size the
    kernel without the threshold (note ``<min``), to show what the threshold saves."""
    fast = factory(list(shapes), [np.float32] * len(shapes), attrs) if factory else None
    if fast is None and op == "matmul":
        fast = matmul(list(shapes), [np.float32] * 2, attrs, min_macs=0)
        return fast, "<min " if fast is not None else ""
    return fast, ""


def bench_specs(specs, batch, repeats) -> None:
    kernels, rng = onednn_kernels(), np.random.default_rng(0)
    with_torch = torch_variant("maxpool", [np.zeros((1, 2, 2, 1), np.float32)],
                               {"window": 2, "stride": None, "padding": "VALID"}) is not None
    print(f"{'op':<24} {'inputs':<34} {'pad':<5} {'numpy':>8} {'onednn':>8} "
          f"{'torch_cl':>8}  {'np/dnnl':>7}  impl")
    for path in specs:
        n, layers = spec_layers(path, batch)
        print(f"-- {path} (batch {n})")
        for op, shapes, attrs in layers:
            arrays = inputs_for(op, shapes, attrs, rng)
            ref = get_op(op).kernel
            variants = {"numpy": lambda ref=ref, arrays=arrays, attrs=attrs:
                        ref(np, *arrays, **attrs)}
            fast, note = onednn_variant(kernels.get(op), op, shapes, attrs)
            if fast is not None:
                variants["onednn"] = lambda fast=fast, arrays=arrays: fast(*arrays)
            tv = torch_variant(op, arrays, attrs) if with_torch else None
            if tv is not None:
                variants["torch"] = tv
            ms = interleaved_medians(variants, repeats)
            cells = [f"{ms[k]:8.3f}" if k in ms else f"{'-':>8}"
                     for k in ("numpy", "onednn", "torch")]
            ratio = f"{ms['numpy'] / ms['onednn']:6.1f}x" if "onednn" in ms else "      -"
            pad = attr_text(op, attrs)
            impl = note + fast.impl() if fast is not None else ""
            print(f"{op:<24} {shape_text(shapes):<34} {pad:<5} {' '.join(cells)}  {ratio}  "
                  f"{impl}")


# -- OpenMP wait policy ------------------------------------------------------------------------------

STEP = """
import time, statistics, numpy as np
from netlang.runtime.threads import BLAS_THREADS, configure_cpu_threads
print(configure_cpu_threads(wait_policy={policy!r}, spin_count=None,
                            blas_threads={blas}).describe())
from netlang.runtime.onednn_kernels import matmul, onednn_kernels
K, rng = onednn_kernels(), np.random.default_rng(0)
x = rng.standard_normal((64, 12, 12, 32), np.float32)
w = rng.standard_normal((5, 5, 32, 64), np.float32)
g = rng.standard_normal((64, 8, 8, 64), np.float32)
a = rng.standard_normal((64, 1024), np.float32); b = rng.standard_normal((1024, 1024), np.float32)
sh = [x.shape, w.shape]; f32 = [np.float32] * 3
fwd = K["conv2d"](sh, f32, {{}})
bd = K["conv2d_backprop_input"]([g.shape, w.shape, x.shape], f32, {{}})
bw = K["conv2d_backprop_filter"]([x.shape, g.shape, w.shape], f32, {{}})
def step():
    fwd(x, w); a @ b; bd(g, w, x); a @ b; bw(x, g, w); np.maximum(x, 0); a @ b
times = []
for i in range({repeats} + 3):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(f"RESULT {{statistics.median(times[3:]) * 1e3:.3f}}")
"""


def bench_wait_policy(repeats: int, blas: int | None) -> None:
    """The interleaved step in a fresh process per policy, alternating policies 3 times."""
    results: dict[str, list[float]] = {}
    for _ in range(3):
        for policy in (None, "passive", "active"):
            env = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
            env["PYTHONPATH"] = str(ROOT)
            out = subprocess.run([sys.executable, "-c", STEP.format(policy=policy, blas=blas,
                                                                    repeats=repeats)],
                                 capture_output=True, text=True, env=env, check=True).stdout
            ms = float(out.split("RESULT")[1])
            results.setdefault(str(policy or "default"), []).append(ms)
            print(f"  {policy or 'default'!s:<8} {ms:8.3f} ms   ({out.splitlines()[0]})")
    for policy, ms in results.items():
        print(f"OMP_WAIT_POLICY={policy:<8} median of processes {statistics.median(ms):8.3f} ms "
              f"per step")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=SPECS)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", action="store_true", help="time OMP_WAIT_POLICY choices")
    parser.add_argument("--blas-threads", type=int, default=BLAS_THREADS,
                        help="OpenBLAS threads for --threads (default: threads.BLAS_THREADS)")
    parser.add_argument("--min", action="store_true",
                        help="report the fastest round instead of the median (a busy machine)")
    args = parser.parse_args(argv)
    global STAT
    STAT = min if args.min else statistics.median
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"{'fastest' if args.min else 'median'} of {args.repeats} interleaved rounds; "
          f"load average {load}")
    if args.threads:
        bench_wait_policy(args.repeats, args.blas_threads)
        return 0
    print(configure_cpu_threads().describe())
    if not onednn.available():
        print(onednn.unavailable_reason())
    try:
        import torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        print("torch not importable: no torch column")
    bench_specs(args.specs, args.batch, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
