"""Time the conv and pool kernels of seed 004's MNIST CNN against the bare GEMMs inside them.

    python3 tools/bench_kernels.py [--batch 64 256] [--repeats 15]

For each kernel it prints the median time over repeats, the GFLOP/s it reaches, and the time
of the plain float32 GEMM of the same shape measured in the same run, so what im2col, col2im
and the window loops cost on top of the arithmetic is visible (the ``x gemm`` column).  The
machine's GEMM peak (a large square sgemm) is printed first.  With ``--torch`` (when PyTorch
imports) the same kernels of PyTorch on the CPU (NCHW, its own threads set to the BLAS
thread count) are timed in the same run for comparison.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netlang.ops.conv import PATCHES
from netlang.ops.registry import get_op

# (name, input [H, W, C], filter [kh, kw, cin, cout]) of the CNN's two convolutions, VALID.
CONVS = [("conv1", (28, 28, 1), (5, 5, 1, 32)), ("conv2", (12, 12, 32), (5, 5, 32, 64))]
POOLS = [("pool1", (24, 24, 32)), ("pool2", (8, 8, 64))]


STAT = statistics.median
WITH_TORCH = False


def median_ms(fn, repeats: int, setup=None) -> float:
    """Median wall time of ``fn()`` in ms (``--min``: the fastest); ``setup()`` is untimed."""
    times = []
    for _ in range(repeats + 2):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return STAT(times[2:]) * 1e3


def kernel(name):
    return get_op(name).kernel


def gemm_peak(repeats: int) -> float:
    a = np.random.default_rng(0).random((2048, 2048), np.float32)
    ms = median_ms(lambda: a @ a, repeats)
    return 2 * 2048 ** 3 / ms / 1e6


def row(label: str, ms: float, flops: float, gemm_ms: float | None) -> str:
    gf = f"{flops / ms / 1e6:7.1f}" if flops else "      -"
    gemm = f"{gemm_ms:8.3f} {ms / gemm_ms:6.2f}x" if gemm_ms else "       -       -"
    return f"  {label:<28} {ms:8.3f} ms {gf} GFLOP/s   gemm {gemm}"


def bench_conv(name, hwc, wshape, batch, repeats, rng) -> list[str]:
    h, w, c = hwc
    kh, kw, cin, cout = wshape
    x = rng.standard_normal((batch, h, w, c), np.float32)
    wt = rng.standard_normal(wshape, np.float32)
    y = kernel("conv2d")(np, x, wt)
    g = rng.standard_normal(y.shape, np.float32)
    m, k = batch * y.shape[1] * y.shape[2], kh * kw * cin
    patches = rng.standard_normal((m, k), np.float32)
    g2, w2 = g.reshape(m, cout), wt.reshape(k, cout)
    flops = 2 * m * k * cout
    title = (f"{name} x f32{list(x.shape)} w f32{list(wshape)} -> f32{list(y.shape)}  "
             f"({flops / 1e6:.0f} MFLOP per pass)")
    out = [title]
    fwd = median_ms(lambda: kernel("conv2d")(np, x, wt), repeats)
    out.append(row("forward (im2col + GEMM)", fwd, flops, median_ms(lambda: patches @ w2,
                                                                      repeats)))
    bfilt = kernel("conv2d_backprop_filter")
    gemm_f = median_ms(lambda: (g2.T @ patches).T, repeats)
    cold = median_ms(lambda: bfilt(np, x, g, wt), repeats, setup=PATCHES.entries.clear)
    out.append(row("filter grad (im2col + GEMM)", cold, flops, gemm_f))
    warm = median_ms(lambda: bfilt(np, x, g, wt), repeats,
                     setup=lambda: kernel("conv2d")(np, x, wt))
    out.append(row("filter grad after forward", warm, flops, gemm_f))
    binp = kernel("conv2d_backprop_input")
    inp = median_ms(lambda: binp(np, g, wt, x), repeats)
    out.append(row("input grad (GEMM + col2im)", inp, flops,
                   median_ms(lambda: g2 @ w2.T, repeats)))
    if WITH_TORCH:
        out += torch_conv_rows(x, wt, g, repeats)
    return out


def torch_conv_rows(x, wt, g, repeats) -> list[str]:
    """PyTorch's CPU conv2d forward / input grad / filter grad on the same data (NCHW)."""
    import torch
    import torch.nn.functional as F

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    wt_ = torch.from_numpy(wt.transpose(3, 2, 0, 1).copy())
    gt = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())
    flops = 2 * g.size * wt.shape[0] * wt.shape[1] * wt.shape[2]

    def grads(mask):
        return torch.ops.aten.convolution_backward(gt, xt, wt_, None, (1, 1), (0, 0), (1, 1),
                                                   False, (0, 0), 1, mask)
    with torch.no_grad():
        return [row("torch forward", median_ms(lambda: F.conv2d(xt, wt_), repeats), flops,
                    None),
                row("torch filter grad", median_ms(lambda: grads((False, True, False)),
                                                   repeats), flops, None),
                row("torch input grad", median_ms(lambda: grads((True, False, False)),
                                                  repeats), flops, None)]


def torch_pool_rows(x, repeats) -> list[str]:
    import torch
    import torch.nn.functional as F

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    y, idx = F.max_pool2d(xt, 2, return_indices=True)
    g = torch.randn_like(y)
    back = torch.ops.aten.max_pool2d_with_indices_backward
    return [row("torch maxpool forward", median_ms(lambda: F.max_pool2d(xt, 2), repeats), 0,
                None),
            row("torch maxpool grad", median_ms(lambda: back(g, xt, [2, 2], [2, 2], [0, 0],
                                                             [1, 1], False, idx), repeats),
                0, None)]


def bench_pool(name, hwc, batch, repeats, rng) -> list[str]:
    x = np.maximum(rng.standard_normal((batch, *hwc), np.float32), 0)
    y = kernel("maxpool")(np, x)
    g = rng.standard_normal(y.shape, np.float32)
    out = [f"{name} maxpool 2x2 f32{list(x.shape)} -> f32{list(y.shape)}"]
    out.append(row("maxpool forward", median_ms(lambda: kernel("maxpool")(np, x), repeats),
                   0, None))
    out.append(row("maxpool_grad", median_ms(lambda: kernel("maxpool_grad")(np, x, y, g),
                                             repeats), 0, None))
    out.append(row("(relu on the same input)", median_ms(lambda: np.maximum(x, 0), repeats),
                   0, None))
    if WITH_TORCH:
        out += torch_pool_rows(x, repeats)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--min", action="store_true",
                        help="report the fastest run instead of the median (on a busy machine)")
    parser.add_argument("--torch", action="store_true",
                        help="also time PyTorch's CPU kernels (needs torch)")
    args = parser.parse_args(argv)
    global STAT, WITH_TORCH
    STAT = min if args.min else statistics.median
    WITH_TORCH = args.torch
    if args.torch:
        import torch
        torch.set_num_threads(int(os.environ.get("OPENBLAS_NUM_THREADS", "2")))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"{'fastest' if args.min else 'median'} of {args.repeats} runs; load average {load}")
    rng = np.random.default_rng(0)
    print(f"float32 GEMM peak (2048^3): {gemm_peak(args.repeats):.1f} GFLOP/s")
    for batch in args.batch:
        print(f"\n== batch {batch} ==")
        for name, hwc, wshape in CONVS:
            print("\n".join(bench_conv(name, hwc, wshape, batch, args.repeats, rng)))
        for name, hwc in POOLS:
            print("\n".join(bench_pool(name, hwc, batch, args.repeats, rng)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
