"""Each seed workload written with ``torch.nn``, and its training step timed as netlang's is.

The networks match their specs layer for layer (same shapes, parameter counts, batchnorm
epsilon and momentum, optimizer formulas); tools/bench.py times them right after netlang on
the same device, batch and synthetic data.  netlang's package never imports this module.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import netlang
from netlang.cli import bench

# The layouts timed, as (system name in the JSON, torch memory format); the name "pytorch" is
# NCHW, as it was before channels_last was added, so scripts reading the JSON keep working.
LAYOUTS = (("pytorch", torch.contiguous_format), ("pytorch_channels_last", torch.channels_last))


class Residual(nn.Module):
    """x + conv(relu(bn(conv(relu(bn(x)))))), as the spec's residual block."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c, eps=1e-3, momentum=0.01), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c, eps=1e-3, momentum=0.01), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def mnist() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 4 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(1024, 10))


def mnist_small() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 8, 10))


def spiral() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 4))


def residual() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), Residual(16), Residual(16), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 1), Residual(32),
        nn.BatchNorm2d(32, eps=1e-3, momentum=0.01), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


NETS: dict[str, Callable[[], nn.Module]] = {
    "mnist": mnist, "mnist_small": mnist_small, "spiral": spiral, "residual": residual}


def torch_optimizer(params, optimizer) -> torch.optim.Optimizer:
    """The torch optimizer matching netlang's (TensorFlow 1.x formulas, same defaults)."""
    name, lr, h = optimizer.name, optimizer.lr, dict(optimizer.hyper)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(h.get("beta1", 0.9),
                                                      h.get("beta2", 0.999)),
                                eps=h.get("epsilon", 1e-8))
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=h.get("momentum", 0.9),
                               nesterov=bool(h.get("nesterov", False)))
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=h.get("decay", 0.9),
                                   eps=h.get("epsilon", 1e-10),
                                   momentum=h.get("momentum", 0.0))
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr,
                                   initial_accumulator_value=h.get("initial_accumulator", 0.1))
    return torch.optim.SGD(params, lr=lr)


def torch_step(name: str, spec: Path, batch: int, device: str,
               layout: torch.memory_format = torch.contiguous_format, seed: int = 0):
    """(step function, parameter count) of the workload's PyTorch twin on the same device and
    batch as netlang's, its images and weights in ``layout`` (NCHW or channels_last)."""
    torch.manual_seed(seed)
    model = netlang.compile(spec)
    optimizer = bench.train_config_of(model).make_optimizer()
    where = torch.device("cuda" if device == "gpu" else "cpu")
    net = NETS[name]().to(where).train().to(memory_format=layout)
    opt = torch_optimizer(net.parameters(), optimizer)
    feeds = bench.synthetic_batch(model.graph, batch, seed)
    x_name, y_name = [n for n in model.graph.inputs if not n.startswith("train/")][:2]
    x = torch.from_numpy(feeds[x_name])
    if x.ndim == 4:   # netlang's images are NHWC
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=layout)
    y = torch.from_numpy(feeds[y_name].astype(np.int64))
    params = sum(p.numel() for p in net.parameters())

    def step():
        xb, yb = x.to(where, non_blocking=True), y.to(where, non_blocking=True)
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step, params


def torch_inference(name: str, spec: Path, batch: int, device: str,
                    layout: torch.memory_format = torch.contiguous_format, seed: int = 0):
    """(forward step, parameter count): the workload's twin in eval mode, no gradients, on
    netlang's synthetic batch (the logits, copied to the host)."""
    torch.manual_seed(seed)
    model = netlang.compile(spec)
    where = torch.device("cuda" if device == "gpu" else "cpu")
    net = NETS[name]().to(where).eval().to(memory_format=layout)
    feeds = bench.synthetic_batch(model.graph, batch, seed)
    x_name = next(n for n in model.graph.inputs if not n.startswith("train/"))
    x = torch.from_numpy(feeds[x_name])
    if x.ndim == 4:
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=layout)

    def step():
        with torch.no_grad():
            return net(x.to(where)).cpu().numpy()

    return step, sum(p.numel() for p in net.parameters())


def is_image_workload(spec: Path) -> bool:
    model = netlang.compile(spec)
    return any(model.graph.nodes[nid].type.rank == 4
               for name, nid in model.graph.inputs.items() if not name.startswith("train/"))


def rival(system: str, layout: torch.memory_format) -> bench.Rival:
    """PyTorch eager in ``layout``, timed as netlang is; channels_last only on images."""

    def time(name: str, spec: Path, batch: int, args, ours: bench.Result):
        if layout is torch.channels_last and not is_image_workload(spec):
            return None
        step, params = torch_step(name, spec, batch, args.device, layout)
        med = statistics.median(bench.time_steps(step, args.warmup, args.steps))
        note = "" if params == ours.params else f"{system} params {params} vs netlang {ours.params}"
        return bench.Result(name, batch, system, batch / med, med * 1e3, note, params=params)

    return bench.Rival(system, time)


def rivals() -> tuple[list[bench.Rival], str]:
    """PyTorch NCHW and channels_last, and the line that says what they are.

    Same float32 arithmetic as netlang: TF32 tensor-core rounding in convs and matmuls is
    switched off for the whole process (torch.backends settings are process-wide)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    note = f"torch {torch.__version__} eager, float32 (TF32 off), NCHW and channels_last"
    return [rival(system, layout) for system, layout in LAYOUTS], note
