"""netlang bench: training throughput of the seed workloads, next to PyTorch eager.

For each workload (a spec in ``specs/``) and batch size the train step is built as
``netlang train`` builds it (network + gradients + the spec's optimizer; one
``session.run(loss, training=True, updates=True)`` per step) and fed a fixed synthetic batch,
copied to the device every step as real batches are.  After warm-up steps, steps are timed one
by one (each ends when its loss is on the host); samples/s = batch / median step time.  The
same network written with ``torch.nn`` (same layers, optimizer and batch) is timed the same way
on the same device when ``import torch`` works.  Also printed: the compile time of
``specs/mnist.net`` (parse, shapes, passes, autodiff, plan; median of several runs), and with
``--allocations`` the arrays and kernel calls one training step takes with and without fusion,
and with ``--profile TOP`` the TOP kinds of kernel that take most of a step's time.

    netlang bench --device cpu --batch 64 256 --steps 20
    python tools/bench.py --device gpu --json bench.json
"""
from __future__ import annotations

import contextlib
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import netlang
from netlang.errors import UsageError

HELP = "training throughput of the seed workloads (samples/s), next to PyTorch"
SPECS = Path(__file__).resolve().parents[2] / "specs"
WORKLOADS = ("mnist", "mnist_small", "spiral", "residual")
CNNS = ("mnist", "mnist_small", "residual")


def add_arguments(parser) -> None:
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256], metavar="B",
                        help="batch sizes (default: 64 256)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), metavar="NAME",
                        help=f"specs to run (default: {' '.join(WORKLOADS)})")
    parser.add_argument("--specs", default=str(SPECS), metavar="DIR",
                        help="folder of the workload specs (default: the repo's specs/)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch runs")
    parser.add_argument("--no-fusion", action="store_true",
                        help="run netlang without the fusion pass (to see what it buys)")
    parser.add_argument("--compile-runs", type=int, default=5,
                        help="compile specs/mnist.net this many times (0: skip)")
    parser.add_argument("--allocations", action="store_true",
                        help="also count arrays and kernel calls per step, fused vs not")
    parser.add_argument("--profile", type=int, default=0, metavar="TOP",
                        help="also time every kernel of a step (the device synchronised after "
                             "each) and print the TOP heaviest kinds of kernel per run")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


@dataclass
class Result:
    workload: str
    batch: int
    system: str                 # "netlang" or "pytorch"
    samples_per_s: float
    step_ms: float              # median
    note: str = ""
    kernel_calls: int | None = None   # netlang: kernels run per step (one launch per fused group)
    profile: list | None = None       # netlang with --profile: [label, calls, ms, share] rows


# -- netlang ----------------------------------------------------------------------------------

def train_config_of(model):
    from netlang.train.config import TrainConfig, train_config

    section = model.graph.meta.get("train")
    return train_config(section, model.graph.name) if section else TrainConfig()


def build_train_model(model, config):
    """The train step's Model, exactly as the trainer builds it."""
    from netlang.model import Model
    from netlang.train.step import build_train_graph

    optimizer = config.make_optimizer()
    return Model(build_train_graph(model, optimizer, config.weight_decay)), optimizer


def classes_of(graph) -> int:
    """How many classes the labels range over: the logits' width of the loss op."""
    for node in graph.nodes.values():
        if node.op in ("softmax_cross_entropy", "sigmoid_cross_entropy"):
            width = graph.nodes[node.inputs[0]].type.shape[-1]
            return width if isinstance(width, int) else 2
    return 2


def synthetic_batch(graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch for every user input: floats ~ N(0,1), integer labels in [0, classes)."""
    rng = np.random.default_rng(seed)
    classes = classes_of(graph)
    feeds = {}
    for name, nid in graph.inputs.items():
        if name.startswith("train/"):
            continue
        t = graph.nodes[nid].type
        shape = tuple(batch if not isinstance(d, int) else d for d in t.shape)
        if t.dtype.is_float:
            feeds[name] = rng.standard_normal(shape).astype(t.dtype.numpy)
        else:
            feeds[name] = rng.integers(0, classes, shape).astype(t.dtype.numpy)
    return feeds


def netlang_step(spec: Path, batch: int, device: str, seed: int = 0):
    """(step function returning the loss, parameter count) for one workload."""
    from netlang.train.step import LR_INPUT

    model = netlang.compile(spec)
    config = train_config_of(model)
    train, optimizer = build_train_model(model, config)
    session = train.session(device, seed)
    feeds = synthetic_batch(model.graph, batch, seed)
    feeds[LR_INPUT] = np.float32(optimizer.lr)
    loss = model.graph.loss
    params = sum(int(np.prod(model.graph.nodes[i].type.shape)) for i in model.graph.params.values())

    def step():
        return session.run(loss, feeds, training=True, updates=True)

    return step, params, session, feeds


def profile_steps(session, step: Callable, steps: int):
    """Run ``steps`` more steps with every kernel timed (``runtime/profile.py``)."""
    from netlang.runtime.profile import KernelProfile

    profile = KernelProfile(session.backend)
    session.executor.profile = profile
    try:
        for _ in range(steps):
            step()
    finally:
        session.executor.profile = None
    return profile


def print_profile(name: str, batch: int, profile, step_s: float, top: int) -> None:
    total = profile.total_ms()
    print(f"\n  {name} batch {batch}: kernels take {total:.2f} ms of a {step_s * 1e3:.2f} ms "
          f"step when timed one by one; the heaviest {top}:")
    print(f"    {'kernel':<40} {'calls':>5} {'ms/step':>8} {'share':>6}")
    for row in profile.rows(top):
        print(f"    {row.label:<40} {row.calls:>5.0f} {row.ms:>8.3f} {row.share:>6.1%}")


def time_steps(step: Callable, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def fusion_disabled(disabled: bool = True):
    """The optimize pipeline without the fusion pass, for the duration of the block."""
    from netlang.passes import pipeline

    saved = list(pipeline.OPTIMIZE)
    if disabled:
        pipeline.OPTIMIZE[:] = [(n, p) for n, p in saved if n != "fusion"]
    try:
        yield
    finally:
        pipeline.OPTIMIZE[:] = saved


# -- PyTorch ----------------------------------------------------------------------------------

def torch_nets() -> dict[str, Callable]:
    """Each workload's network in torch.nn, layer for layer as its spec (NCHW)."""
    import torch
    from torch import nn

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

    def mnist():
        return nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(4 * 4 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(1024, 10))

    def mnist_small():
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(7 * 7 * 8, 10))

    def spiral():
        return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                             nn.Linear(64, 4))

    def residual():
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), Residual(16), Residual(16), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 1), Residual(32),
            nn.BatchNorm2d(32, eps=1e-3, momentum=0.01), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    del torch
    return {"mnist": mnist, "mnist_small": mnist_small, "spiral": spiral,
            "residual": residual}


def torch_optimizer(torch, params, optimizer):
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


def torch_step(name: str, spec: Path, batch: int, device: str, seed: int = 0):
    """(step function, parameter count) of the workload's PyTorch twin on the same device."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    # Same float32 arithmetic as netlang: no TF32 tensor-core rounding in convs or matmuls.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = netlang.compile(spec)
    config = train_config_of(model)
    optimizer = config.make_optimizer()
    where = torch.device("cuda" if device == "gpu" else "cpu")
    net = torch_nets()[name]().to(where).train()
    opt = torch_optimizer(torch, net.parameters(), optimizer)
    feeds = synthetic_batch(model.graph, batch, seed)
    x_name, y_name = [n for n in model.graph.inputs if not n.startswith("train/")][:2]
    x = torch.from_numpy(to_nchw(feeds[x_name]))
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


def to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def torch_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as err:
        return False, f"PyTorch is not installed ({err})"
    return True, f"torch {torch.__version__} eager, float32 (TF32 off)"


# -- compile time and allocations ---------------------------------------------------------------

def compile_times(spec: Path, runs: int) -> dict[str, float]:
    """Median seconds of each stage for ``spec``'s train step, over ``runs`` runs."""
    stages: dict[str, list[float]] = {"parse+shapes+prepare": [], "autodiff+optimizer": [],
                                      "optimize+plan": [], "total": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        model = netlang.compile(spec)
        t1 = time.perf_counter()
        train, _ = build_train_model(model, train_config_of(model))
        t2 = time.perf_counter()
        graph = train.graph
        fed = frozenset(graph.inputs.values())
        train.program((graph.outputs[graph.loss],), fed, True, True)
        t3 = time.perf_counter()
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            stages[key].append(value)
    return {k: statistics.median(v) for k, v in stages.items()}


def step_allocations(spec: Path, batch: int, fused: bool) -> dict[str, int]:
    """One CPU training step: kernel calls, arrays kernels allocate, tracemalloc peak."""
    from netlang.ops.fused import plan_for

    with fusion_disabled(not fused):
        step, _, session, _ = netlang_step(spec, batch, "cpu")
        step()
    values: dict[int, Any] = {}
    owned = [0]

    def on_step(node, value):
        values[node.id] = value
        if node.op in ("input", "param", "state", "const") or getattr(value, "base", 0) is not None:
            return
        owned[0] += 1
        if node.op == "fused":
            owned[0] += plan_for(node.attrs["expr"], [values[i] for i in node.inputs]).scratch

    session.executor.on_step = on_step
    calls = session.executor.kernel_calls
    tracemalloc.start()
    try:
        step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        session.executor.on_step = None
    return {"kernel_calls": session.executor.kernel_calls - calls, "arrays": owned[0],
            "peak_bytes": peak}


# -- the command --------------------------------------------------------------------------------

def spec_path(folder: str, name: str) -> Path:
    path = Path(folder) / f"{name}.net"
    if not path.is_file():
        raise UsageError(f"bench: no spec {path}", hint="run from the repository, or --specs DIR")
    return path


def bench_one(name: str, spec: Path, batch: int, args, with_torch: bool) -> list[Result]:
    out = []
    with fusion_disabled(args.no_fusion):
        step, params, session, _ = netlang_step(spec, batch, args.device)
        step()
        calls = session.executor.kernel_calls
        step()
        calls = session.executor.kernel_calls - calls
        times = time_steps(step, args.warmup, args.steps)
        profile = profile_steps(session, step, args.steps) if args.profile else None
    med = statistics.median(times)
    rows = None if profile is None else [
        [r.label, r.calls, r.ms, r.share] for r in profile.rows(args.profile)]
    out.append(Result(name, batch, "netlang", batch / med, med * 1e3,
                      "no fusion" if args.no_fusion else "", calls, rows))
    if profile is not None:
        print_profile(name, batch, profile, med, args.profile)
    if with_torch:
        tstep, tparams = torch_step(name, spec, batch, args.device)
        ttimes = time_steps(tstep, args.warmup, args.steps)
        tmed = statistics.median(ttimes)
        note = "" if tparams == params else f"params {tparams} vs netlang {params}"
        out.append(Result(name, batch, "pytorch", batch / tmed, tmed * 1e3, note))
    return out


def print_table(results: list[Result], device: str) -> None:
    print(f"\ntraining throughput on {device} (median of timed steps)")
    print(f"  {'workload':<12} {'batch':>5} {'netlang/s':>11} {'pytorch/s':>11} "
          f"{'ratio':>6} {'kernels':>7}  note")
    rows: dict[tuple, dict[str, Result]] = {}
    for r in results:
        rows.setdefault((r.workload, r.batch), {})[r.system] = r
    for (name, batch), pair in rows.items():
        ours, theirs = pair.get("netlang"), pair.get("pytorch")
        ratio = f"{ours.samples_per_s / theirs.samples_per_s:.2f}" if ours and theirs else "-"
        note = "; ".join(x.note for x in pair.values() if x.note)
        print(f"  {name:<12} {batch:>5} {ours.samples_per_s:>11,.0f} "
              f"{(f'{theirs.samples_per_s:,.0f}' if theirs else '-'):>11} {ratio:>6} "
              f"{ours.kernel_calls:>7}  {note}".rstrip())


def run(args) -> int:
    from netlang.runtime import backend

    check_arguments(args)
    backend.get_backend(args.device)   # one clear error if the GPU is not there
    torch_ok, torch_note = (False, "--no-torch") if args.no_torch else torch_available()
    print(f"netlang bench: device {args.device}, batches {args.batch}, {args.steps} timed "
          f"steps after {args.warmup} warm-up; PyTorch: {torch_note}", flush=True)
    report: dict[str, Any] = {"device": args.device, "torch": torch_note, "results": []}
    results: list[Result] = []
    for name in args.workloads:
        spec = spec_path(args.specs, name)
        for batch in args.batch:
            results += bench_one(name, spec, batch, args, torch_ok)
            print(f"  {name} batch {batch}: " + ", ".join(
                f"{x.system} {x.samples_per_s:,.0f}/s ({x.step_ms:.1f} ms)"
                for x in results if x.workload == name and x.batch == batch), flush=True)
    print_table(results, args.device)
    report["results"] = [asdict(r) for r in results]
    if args.compile_runs > 0:
        times = compile_times(spec_path(args.specs, "mnist"), args.compile_runs)
        report["compile_s"] = times
        print("\ncompile time of specs/mnist.net's train step (median of "
              f"{args.compile_runs}): " + ", ".join(f"{k} {v * 1e3:.0f} ms"
                                                     for k, v in times.items()))
    if args.allocations:
        report["allocations"] = print_allocations(args)
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2))
        except OSError as err:
            raise UsageError(f"--json: cannot write '{args.json}': {err.strerror}") from None
    return 0


def check_arguments(args) -> None:
    """Refuse settings that cannot give a number, before minutes of benchmarking."""
    for batch in args.batch:
        if batch < 1:
            raise UsageError(f"--batch must be at least 1, got {batch}")
    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be at least 0, got {args.warmup}")
    if args.profile < 0:
        raise UsageError(f"--profile must be at least 0, got {args.profile}")
    if args.json and not Path(args.json).parent.is_dir():
        raise UsageError(f"--json: cannot write '{args.json}': no folder "
                         f"'{Path(args.json).parent}'")


def print_allocations(args) -> dict:
    print("\none CPU training step at batch 64: unfused -> fused")
    out = {}
    for name in args.workloads:
        spec = spec_path(args.specs, name)
        before, after = (step_allocations(spec, 64, fused) for fused in (False, True))
        out[name] = {"unfused": before, "fused": after}
        print(f"  {name:<12} kernel calls {before['kernel_calls']} -> {after['kernel_calls']}, "
              f"arrays allocated {before['arrays']} -> {after['arrays']}, "
              f"peak {before['peak_bytes'] / 2**20:.1f} -> {after['peak_bytes'] / 2**20:.1f} MiB")
    return out

