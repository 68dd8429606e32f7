"""netlang bench: training throughput of the seed workloads, and the compile time of a spec.

For each workload (a spec shipped in ``netlang/specs``, or one in ``--specs DIR``) and batch
size the train step is built as ``netlang train`` builds it (network + gradients + the spec's
optimizer; one ``session.run(loss, training=True, updates=True)`` per step) and fed a fixed
synthetic batch, copied to the device every step as real batches are.  After warm-up steps,
steps are timed one by one (each ends when its loss is on the host); samples/s = batch /
median step time.  Also printed: the compile time of ``mnist.net``'s train step (parse,
shapes, passes, autodiff, plan; median of several runs), with ``--allocations`` the arrays and
kernel calls one training step takes with and without fusion (and the bytes NumPy allocates
during a step with the buffer plan), and with ``--profile TOP`` the
TOP kinds of kernel that take most of a step's time.

The package never imports torch: ``python3 tools/bench.py`` runs this same benchmark with
rivals (PyTorch's twin of each network, NCHW and channels_last) timed right after netlang on
each workload and batch, through ``run(args, rivals)``.

    netlang bench --device cpu --batch 64 256 --steps 20
    python3 tools/bench.py --device gpu --json bench.json
"""
from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import netlang
from netlang.cli import add_device_arguments
from netlang.errors import UsageError
from netlang.passes.pipeline import OPTIMIZE, without

HELP = "training throughput of the seed workloads (samples/s) and compile time"
# The workloads' specs ship inside the package (netlang/specs, package data), as the grammar does.
SPECS = Path(netlang.__file__).parent / "specs"
WORKLOADS = ("mnist", "mnist_small", "spiral", "residual")
NO_TORCH_HELP = ("accepted so scripts keep working; netlang bench never runs PyTorch "
                 "(python3 tools/bench.py times it next to netlang)")
NO_RIVALS = "not run (netlang bench never imports torch; python3 tools/bench.py adds it)"


def add_arguments(parser, no_torch_help: str = NO_TORCH_HELP) -> None:
    add_device_arguments(parser)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256], metavar="B",
                        help="batch sizes (default: 64 256)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time netlang and its rivals this many times in turn on each "
                             "workload and batch, and report each one's median round (the "
                             "load of a shared machine moves between rounds)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), metavar="NAME",
                        help=f"specs to run (default: {' '.join(WORKLOADS)})")
    parser.add_argument("--specs", default=str(SPECS), metavar="DIR",
                        help="folder of the workload specs (default: the specs shipped "
                             "with netlang)")
    parser.add_argument("--no-torch", action="store_true", help=no_torch_help)
    parser.add_argument("--no-fusion", action="store_true",
                        help="run netlang without the fusion pass (to see what it buys)")
    parser.add_argument("--compile-runs", type=int, default=5,
                        help="compile mnist.net's train step this many times (0: skip)")
    parser.add_argument("--kernel-start", action="store_true",
                        help="also time how long mnist.net's step takes to get its generated "
                             "kernels: the first time ever (an empty cache) and with a warm "
                             "cache, each in a fresh process")
    parser.add_argument("--allocations", action="store_true",
                        help="also count arrays and kernel calls per step, fused vs not, "
                             "and the bytes a step allocates with the buffer plan")
    parser.add_argument("--profile", type=int, default=0, metavar="TOP",
                        help="also time every kernel of a step (the device synchronised after "
                             "each) and print the TOP heaviest kinds of kernel per run")
    parser.add_argument("--inference", action="store_true",
                        help="time the forward pass in eval mode (the loss and metrics, as "
                             "netlang eval fetches them) instead of a training step")
    parser.add_argument("--load", action="store_true",
                        help="time the steps while one other process keeps a core busy (as on "
                             "a shared machine)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


@dataclass
class Result:
    workload: str
    batch: int
    system: str                 # "netlang", or a rival's (tools/bench.py: "pytorch", ...)
    samples_per_s: float
    step_ms: float              # median
    note: str = ""
    kernel_calls: int | None = None   # netlang: kernels run per step (one launch per fused group)
    profile: list | None = None       # netlang with --profile: [label, calls, ms, share] rows
    params: int | None = None         # trainable numbers in the network
    launches: int | None = None       # netlang on the GPU: graph launches, eager calls and key
    #                                   fills per step where the step is replayed (capture.py)


@dataclass(frozen=True)
class Rival:
    """Another system timed right after netlang on each workload and batch.

    ``time(workload, spec, batch, args, netlang_result)`` returns its row, or None where it
    does not apply (channels_last on an MLP)."""

    system: str
    time: Callable[[str, Path, int, Any, Result], Result | None]


# -- netlang ----------------------------------------------------------------------------------

def passes_of(fused: bool) -> list:
    """The optimize pipeline, with or without the fusion pass."""
    return list(OPTIMIZE) if fused else without(OPTIMIZE, "batchnorm", "fusion")


def train_config_of(model):
    from netlang.train.config import TrainConfig, train_config

    section = model.graph.spec.train
    return train_config(section, model.graph.name) if section else TrainConfig()


def build_train_model(model, config):
    """The train step's Model, exactly as the trainer builds it (with ``model``'s passes)."""
    from netlang.model import Model
    from netlang.train.step import build_train_graph

    optimizer = config.make_optimizer()
    graph = build_train_graph(model, optimizer, config.weight_decay)
    return Model(graph, passes=model.passes), optimizer


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


def netlang_step(spec: Path, batch: int, device: str, seed: int = 0, fused: bool = True,
                 kernels: str = "default"):
    """(step function returning the loss, parameter count, session, feeds) for one workload."""
    from netlang.train.step import LR_INPUT

    model = netlang.compile(spec, passes=passes_of(fused))
    config = train_config_of(model)
    train, optimizer = build_train_model(model, config)
    session = train.session(device, seed, kernels)
    feeds = synthetic_batch(model.graph, batch, seed)
    feeds[LR_INPUT] = np.float32(optimizer.lr)
    loss = model.graph.loss
    params = sum(int(np.prod(model.graph.nodes[i].type.shape)) for i in model.graph.params.values())

    def step():
        return session.run(loss, feeds, training=True, updates=True)

    return step, params, session, feeds


def inference_step(spec: Path, batch: int, device: str = "cpu", seed: int = 0,
                   kernels: str = "default"):
    """(forward step, parameter count): the loss and metrics in eval mode on one synthetic
    batch, as ``netlang eval`` fetches them (no gradients, no updates)."""
    model = netlang.compile(spec)
    session = model.session(device, seed, kernels)
    feeds = synthetic_batch(model.graph, batch, seed)
    names = [n for n in [model.graph.loss, *model.graph.metrics] if n]
    params = sum(int(np.prod(model.graph.nodes[i].type.shape)) for i in model.graph.params.values())

    def step():
        return session.run(names, feeds, training=False)

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


# Bytes the cold copies of ``update_floor_ms`` rotate through: many times the 2 MiB L2 cache
# per core of the machines we measure on, so each copy's bytes were last touched long ago.
COLD_BYTES = 64 << 20


def update_floor_elements(session) -> int:
    """float32 elements one NumPy copy takes to move as many bytes as a single-pass update
    (every updated variable read and written, every gradient read: Adam's 7 arrays of a
    parameter's size): half of them read, half written; 0 when the session trained nothing."""
    program = session_program(session)
    if program is None:
        return 0
    graph = program.graph
    updated = sum(graph.nodes[graph.state.get(n, graph.params.get(n, -1))].type.numel()
                  for n in program.updates if n in graph.state or n in graph.params)
    grads = sum(graph.nodes[i].type.numel() for n, i in graph.params.items()
                if n in program.updates)
    return max(4 * (2 * updated + grads) // 8, 1)


def update_floor_ms(session, repeats: int = 21) -> tuple[float, float]:
    """The memory-bandwidth floor of the optimizer's update outside the step: one NumPy copy
    of the bytes a single-pass update moves (``update_floor_elements``), median
    milliseconds, warm and cold: ``(the same bytes copied again and again, in cache; each
    copy of bytes last touched COLD_BYTES ago)``.  Both run in a warm interpreter, between
    steps; ``UpdateSpans.floors`` holds the copy timed where the update runs."""
    size = update_floor_elements(session)
    if not size:
        return 0.0, 0.0
    places = max(COLD_BYTES // (4 * size), 2)
    src = np.ones(size * places, np.float32)  # written whole: no page is touched first below
    dst = np.ones_like(src)

    def median_copy_ms(at) -> float:
        times = []
        for k in range(repeats):
            part = slice(at(k) * size, (at(k) + 1) * size)
            start = time.perf_counter()
            np.copyto(dst[part], src[part])
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3
    return median_copy_ms(lambda k: 0), median_copy_ms(lambda k: (1 + k) % places)


def update_span_ms(session, step: Callable, steps: int) -> tuple[float, float]:
    """The optimizer's update of every parameter inside the train step and its floor there,
    median ms: ``(from the start of the step's first in-place update call to the end of its
    last, one NumPy copy of the same bytes timed at the first call's place)`` over ``steps``
    unprofiled steps each (``UpdateSpans``; the calls wrapped, then put back); zeros when the
    step updates nothing in place."""
    spans = update_spans(session, floor=True)
    if spans is None:
        return 0.0, 0.0
    try:
        for copying in (False, True):
            spans.copying = copying
            for _ in range(steps):
                step()
    finally:
        spans.restore()
    return ((statistics.median(spans) * 1e3 if spans else 0.0),
            (statistics.median(spans.floors) * 1e3 if spans.floors else 0.0))


class UpdateSpans(list):
    """Seconds per step from the first update call's start to the last's end (``update_spans``).

    ``floors``: with a floor (``update_spans(floor=True)``), while ``copying`` is set each step
    copies the bytes a single-pass update moves (``update_floor_elements``) with NumPy right
    where the first update call starts, and times that instead of the span: the floor under
    the same conditions as the update (steps that copy time no span: the copy would evict
    what the update reads).  Python after a large step's kernels runs on a cold cache (on
    this project's 2-core AMD hosts a ``[0 for _ in range(100)]`` takes 1.5 us, and 26 us after
    64 MiB of NumPy copies), so a copy timed between steps in a warm interpreter
    (``update_floor_ms``) is no floor for a call inside the step.  The copy's two buffers are
    made once and touched by nothing else, as the update's variables are touched by nothing
    between its calls."""

    def __init__(self, bound, wrapped: dict, floor: int = 0):
        super().__init__()
        self.bound, self.wrapped = bound, wrapped
        self.floors: list[float] = []
        self.src = np.ones(floor, np.float32)       # written whole: no page touched first
        self.dst = np.ones_like(self.src)
        self.copying = False        # the steps time the copy, not the span

    def restore(self) -> None:
        for index, call in self.wrapped.items():
            self.bound.calls[index] = call
        self.bound.step = None          # the straight-line step is made again from the calls


def update_spans(session, floor: bool = False) -> UpdateSpans | None:
    """Wrap the first and last in-place update call of the session's train step (each
    variable written over by the optimizer, merged or not; a merged update's later members
    are no calls) to time the span between them (and with ``floor`` the copy of
    ``UpdateSpans.floors`` instead while ``copying`` is set); None when there is none."""
    from netlang.runtime.executor import runs_a_kernel

    program = session_program(session)
    bound_sizes = session.executor._bound.get(program) if program is not None else None
    if not bound_sizes:
        return None
    bound = next(iter(bound_sizes.values()))
    written = {u.target for u in bound.in_place}
    updates = [i for i, (_, run, args, _) in enumerate(bound.calls)
               if "optimizer" in program.calls[i].node.tags and runs_a_kernel(run)
               and written.intersection(args)]
    if not updates:
        return None
    first, last = updates[0], updates[-1]
    spans = UpdateSpans(bound, {first: bound.calls[first], last: bound.calls[last]},
                        update_floor_elements(session) if floor else 0)
    started = [0.0]

    def begin() -> None:
        if spans.copying:
            start = time.perf_counter()
            np.copyto(spans.dst, spans.src)
            spans.floors.append(time.perf_counter() - start)
        started[0] = time.perf_counter()

    def end() -> None:
        if not spans.copying:
            spans.append(time.perf_counter() - started[0])

    def timed(run: Callable, at_start: bool, at_end: bool) -> Callable:
        def call(*arrays):
            if at_start:
                begin()
            result = run(*arrays)
            if at_end:
                end()
            return result
        return call
    for index in {first, last}:
        out, run, args, dead = bound.calls[index]
        bound.calls[index] = (out, timed(run, index == first, index == last), args, dead)
    bound.step = None
    return spans


def session_program(session):
    """The last program the session ran with updates (the train step), or None."""
    for compiled in reversed(list(session.model._programs.values())):
        if compiled.program.updates:
            return compiled.program
    return None


def bench_netlang(name: str, spec: Path, batch: int, args) -> Result:
    """netlang's row for one workload and batch (and its kernel profile with --profile)."""
    kernels = getattr(args, "kernels", "default")
    if getattr(args, "inference", False):
        step, params, session, _ = inference_step(spec, batch, args.device, kernels=kernels)
    else:
        step, params, session, _ = netlang_step(spec, batch, args.device,
                                                fused=not args.no_fusion, kernels=kernels)
    step()
    calls = session.executor.kernel_calls
    step()
    calls = session.executor.kernel_calls - calls
    launches = replayed_launches(session)
    if launches is not None:
        print(f"  {name} batch {batch}: {launches_line(launches, calls)}", flush=True)
    med = statistics.median(time_steps(step, args.warmup, args.steps))
    profile = profile_steps(session, step, args.steps) if args.profile else None
    rows = None if profile is None else [
        [r.label, r.calls, r.ms, r.share] for r in profile.rows(args.profile)]
    if profile is not None:
        print_profile(name, batch, profile, med, args.profile)
        update, in_step = (update_span_ms(session, step, args.steps)
                           if args.device == "cpu" else (0.0, 0.0))
        if update:
            warm, cold = update_floor_ms(session)
            print(f"  {name} batch {batch}: optimizer update {update:.3f} ms per step (first "
                  f"to last update call, unprofiled); one NumPy copy of the bytes a "
                  f"single-pass update moves {in_step:.3f} ms in the step (where the update "
                  f"starts), {warm:.3f} ms warm, {cold:.3f} ms cold between steps (update / "
                  f"floor {update / in_step:.2f}x in the step, {update / warm:.2f}x warm, "
                  f"{update / cold:.2f}x cold)" if in_step and warm and cold else "")
    return Result(name, batch, "netlang", batch / med, med * 1e3,
                  "no fusion" if args.no_fusion else "", calls, rows, params,
                  None if launches is None else sum(launches.values()))


def replayed_launches(session) -> dict[str, int] | None:
    """What one step of the session's largest replayed program launches (``GraphedProgram
    .launches``), or None where no step is replayed (the CPU, ``--no-graph``)."""
    from netlang.runtime.capture import graphed_programs

    graphed = graphed_programs(session.executor)
    if not graphed:
        return None
    return max(graphed, key=lambda g: len(g.program.calls)).launches()


def launches_line(launches: dict[str, int], calls: int) -> str:
    """``a step launches 12 instead of its 60 kernel calls (5 CUDA graphs, 6 eager calls,
    1 key fill)``."""
    names = {"graphs": "CUDA graph", "eager calls": "eager call", "key fills": "key fill"}
    parts = [f"{n} {names[k]}{'' if n == 1 else 's'}" for k, n in launches.items()]
    return (f"a step launches {sum(launches.values())} instead of its {calls} kernel calls "
            f"({', '.join(parts)})")


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


# Run in a fresh process by ``kernel_start``: what a user's ``netlang train`` pays before its
# first step (its JSON on the last line of stdout).  As there: Numba is set up and the kernels
# an earlier run listed are loaded (``backend.cpu_set_up_beside``, beside the data loading
# there), then the graph compiles and the first step binds the program and runs it.
KERNEL_START = """
import json, sys, time
started = time.perf_counter()
from netlang.runtime import backend, jit
ahead = backend.set_up_cpu("bench-kernel-start")
set_up = time.perf_counter() - started
from pathlib import Path
from netlang.cli.bench import netlang_step
began = time.perf_counter()
step = netlang_step(Path(sys.argv[1]), 64, "cpu")[0]
graph = time.perf_counter() - began
began = time.perf_counter()
step()
first = time.perf_counter() - began
began = time.perf_counter()
step()
second = time.perf_counter() - began
jit.remember_kernels("bench-kernel-start")
s = jit.STATS
print(json.dumps({"set_up_s": set_up, "ahead": ahead,
                  "graph_s": graph, "kernels_s": s.seconds + s.compile_seconds,
                  "compiled": s.compiled, "aside": s.aside, "cached": s.cached,
                  "written": s.written, "first_step_s": first, "next_step_s": second}))
"""


def kernel_start(spec: Path, cache: Path) -> dict[str, Any]:
    """One fresh process binding ``spec``'s train step at batch 64 with netlang's kernel
    cache and Numba's machine-code cache (of the hand-written loops too) in ``cache``, which
    starts empty, so the first call compiles every kernel as on a user's first-ever run."""
    import os

    env = dict(os.environ, NETLANG_CACHE_DIR=str(cache), NUMBA_CACHE_DIR=str(cache / "numba"))
    done = subprocess.run([sys.executable, "-c", KERNEL_START, str(spec)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"timing the kernels' start failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_kernel_start(spec: Path) -> dict[str, Any]:
    """The kernels' first-ever compile, then a warm start from the cache it left."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="netlang-kernels-") as folder:
        cold = kernel_start(spec, Path(folder))
        warm = kernel_start(spec, Path(folder))
    print(f"\nkernels of specs/{spec.name}'s train step at batch 64, each start in a fresh "
          "process: the set-up (importing Numba and networkx, Numba's registries, the kernels "
          "the last run used: beside the data loading in netlang train), the spec's compile, "
          "then the first step, which compiles the step's program, binds it (compiling the "
          "kernels not loaded) and runs it:")
    for name, row in (("first ever (empty cache)", cold), ("warm cache", warm)):
        ms = {k: f"{row[k] * 1e3:,.0f}" for k in row if k.endswith("_s")}
        print(f"  {name}: set-up {ms['set_up_s']} ms ({row['ahead']} kernels loaded), "
              f"spec {ms['graph_s']} ms, first step "
              f"{ms['first_step_s']} ms, next step {row['next_step_s'] * 1e3:,.1f} ms; "
              f"kernels {ms['kernels_s']} ms in all ({row['compiled']} compiled, "
              f"{row['aside']} of them in a helper process, {row['cached']} from cache)")
    return {"cold": cold, "warm": warm}


def step_allocations(spec: Path, batch: int, fused: bool) -> dict[str, int]:
    """One CPU training step run kernel by kernel with a hook that sees every value (the
    program without the buffer plan, as the non-finite search runs it): kernel calls,
    arrays kernels allocate, tracemalloc peak."""
    from netlang.runtime.fused_plan import plan_for

    step, _, session, _ = netlang_step(spec, batch, "cpu", fused=fused)
    step()
    values: dict[int, Any] = {}
    owned = [0]

    def on_step(node, value):
        values[node.id] = value
        if node.is_source() or getattr(value, "base", 0) is not None:
            return
        owned[0] += 1
        if node.op == "fused":
            owned[0] += plan_for(node.attrs["expr"], [values[i] for i in node.inputs]).scratch

    session.executor.on_step = on_step
    calls = session.executor.kernel_calls
    try:
        peak = traced_peak(step)
    finally:
        session.executor.on_step = None
    return {"kernel_calls": session.executor.kernel_calls - calls, "arrays": owned[0],
            "peak_bytes": peak}


def planned_step_peak(spec: Path, batch: int) -> int:
    """Bytes NumPy allocates at most during one CPU training step as steps run (fused, the
    buffer plan's arena, the third step: the arena and spares were made before), over what
    it held when the step started (tracemalloc's peak)."""
    step, _, _, _ = netlang_step(spec, batch, "cpu")
    for _ in range(2):
        step()
    return traced_peak(step)


def traced_peak(step: Callable) -> int:
    """The most bytes Python and NumPy held during ``step()`` over what they held before."""
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- the command --------------------------------------------------------------------------------

def spec_path(folder: str, name: str) -> Path:
    path = Path(folder) / f"{name}.net"
    if not path.is_file():
        shipped = sorted(p.stem for p in Path(folder).glob("*.net"))
        hint = (f"specs there: {', '.join(shipped)}; " if shipped else "") + "or --specs DIR"
        raise UsageError(f"bench: no spec {path}", hint=hint)
    return path


def bench_one(name: str, spec: Path, batch: int, args, rivals: Sequence[Rival]) -> list[Result]:
    """netlang's row, then each rival's on the same workload and batch."""
    ours = bench_netlang(name, spec, batch, args)
    theirs = (rival.time(name, spec, batch, args, ours) for rival in rivals)
    return [ours, *(r for r in theirs if r is not None)]


def median_rounds(rounds: list[list[Result]]) -> list[Result]:
    """Per system, in the order they first ran, the row of its median round (of an even
    number, the faster of the middle two).  Each system runs once a round, right after the
    one before it, so a burst of load on a shared machine lands in one round of each rather
    than on one system's whole number."""
    by_system: dict[str, list[Result]] = {}
    for row in rounds:
        for result in row:
            by_system.setdefault(result.system, []).append(result)
    return [sorted(rs, key=lambda r: r.samples_per_s)[len(rs) // 2] for rs in by_system.values()]


def print_table(results: list[Result], device: str, systems: Sequence[str] = (),
                what: str = "training", rounds: int = 1) -> None:
    """One line per workload and batch: netlang, each other system, netlang / the fastest."""
    widths = [max(11, len(s) + 2) for s in systems]
    replayed = any(r.launches is not None for r in results)   # steps as CUDA graphs
    print(f"\n{what} throughput on {device} (median of timed steps"
          + (f", the median of {rounds} rounds taken in turn" if rounds > 1 else "")
          + ("; ratio: netlang / the fastest other system)" if systems else ")"))
    print(f"  {'workload':<12} {'batch':>5} {'netlang/s':>11} "
          + "".join(f"{s + '/s':>{w}} " for s, w in zip(systems, widths))
          + (f"{'ratio':>6}  " if systems else "") + f"{'kernels':>7}  "
          + (f"{'launches':>8}  " if replayed else "") + "note")
    rows: dict[tuple, dict[str, Result]] = {}
    for r in results:
        rows.setdefault((r.workload, r.batch), {})[r.system] = r
    for (name, batch), by_system in rows.items():
        ours = by_system["netlang"]
        others = [by_system.get(s) for s in systems]
        best = max((r.samples_per_s for r in others if r), default=0.0)
        ratio = f"{ours.samples_per_s / best:>6.2f}  " if best else f"{'-':>6}  "
        note = "; ".join(r.note for r in by_system.values() if r.note)
        launches = "-" if ours.launches is None else ours.launches
        print((f"  {name:<12} {batch:>5} {ours.samples_per_s:>11,.0f} "
               + "".join(f"{(f'{r.samples_per_s:,.0f}' if r else '-'):>{w}} "
                         for r, w in zip(others, widths))
               + (ratio if systems else "") + f"{ours.kernel_calls:>7}  "
               + (f"{launches:>8}  " if replayed else "") + note).rstrip())


def run(args, rivals: Sequence[Rival] = (), rivals_note: str = NO_RIVALS) -> int:
    """The benchmark; ``rivals`` (tools/bench.py: PyTorch) are timed after netlang on each
    workload and batch, and ``rivals_note`` says what they are (the JSON's ``torch``)."""
    from netlang.runtime import backend

    check_arguments(args)
    chosen = backend.get_backend(args.device, getattr(args, "kernels", "default"))
    print(f"netlang bench: {chosen.describe()}; batches {args.batch}, {args.steps} timed "
          f"steps after {args.warmup} warm-up; PyTorch: {rivals_note}", flush=True)
    load = getattr(args, "load", False)
    report: dict[str, Any] = {"device": args.device, "torch": rivals_note, "load": load,
                              "results": []}
    results: list[Result] = []
    with busy_neighbour(load):
        for name in args.workloads:
            spec = spec_path(args.specs, name)
            for batch in args.batch:
                rounds = []
                for _ in range(args.rounds):
                    rounds.append(bench_one(name, spec, batch, args, rivals))
                    print(f"  {name} batch {batch}: " + ", ".join(
                        f"{x.system} {x.samples_per_s:,.0f}/s ({x.step_ms:.1f} ms)"
                        for x in rounds[-1]), flush=True)
                results += median_rounds(rounds)
    print_table(results, args.device, [r.system for r in rivals],
                "inference" if getattr(args, "inference", False) else "training", args.rounds)
    report["results"] = [asdict(r) for r in results]
    if args.compile_runs > 0:
        times = compile_times(spec_path(args.specs, "mnist"), args.compile_runs)
        report["compile_s"] = times
        print("\ncompile time of specs/mnist.net's train step (median of "
              f"{args.compile_runs}): " + ", ".join(f"{k} {v * 1e3:.0f} ms"
                                                     for k, v in times.items()))
    if getattr(args, "kernel_start", False):
        report["kernel_start"] = print_kernel_start(spec_path(args.specs, "mnist"))
    if args.allocations:
        report["allocations"] = print_allocations(args)
    if args.json:
        write_json(args.json, report)
    return 0


@contextlib.contextmanager
def busy_neighbour(enabled: bool):
    """While enabled: one other process spinning on a core, the load of a shared machine."""
    if not enabled:
        yield
        return
    print("  (with one busy process beside the benchmark: --load)", flush=True)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def write_json(file: str, report: dict) -> None:
    try:
        Path(file).write_text(json.dumps(report, indent=2))
    except OSError as err:
        raise UsageError(f"--json: cannot write '{file}': {err.strerror}") from None


def check_arguments(args) -> None:
    """Refuse settings that cannot give a number, before minutes of benchmarking."""
    for batch in args.batch:
        if batch < 1:
            raise UsageError(f"--batch must be at least 1, got {batch}")
    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be at least 0, got {args.warmup}")
    if args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, got {args.rounds}")
    if args.profile < 0:
        raise UsageError(f"--profile must be at least 0, got {args.profile}")
    if not Path(args.specs).is_dir():
        raise UsageError(f"--specs: no folder '{args.specs}'")
    if args.json and not Path(args.json).parent.is_dir():
        raise UsageError(f"--json: cannot write '{args.json}': no folder "
                         f"'{Path(args.json).parent}'")


def print_allocations(args) -> dict:
    print("\none CPU training step at batch 64, kernel by kernel with no buffer plan: unfused "
          "-> fused; then as steps run (fused, the buffer plan), what NumPy allocates at most")
    out = {}
    for name in args.workloads:
        spec = spec_path(args.specs, name)
        before, after = (step_allocations(spec, 64, fused) for fused in (False, True))
        planned = planned_step_peak(spec, 64)
        out[name] = {"unfused": before, "fused": after, "planned_peak_bytes": planned}
        print(f"  {name:<12} kernel calls {before['kernel_calls']} -> {after['kernel_calls']}, "
              f"arrays allocated {before['arrays']} -> {after['arrays']}, "
              f"peak {before['peak_bytes'] / 2**20:.1f} -> {after['peak_bytes'] / 2**20:.1f} MiB"
              f"; planned {planned / 2**10:.1f} KiB")
    return out
