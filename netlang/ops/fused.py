"""The ``fused`` op: a group of elementwise ops that runs as one kernel.

The fusion pass (passes/fusion.py) replaces a chain or tree of elementwise nodes with one
``fused`` node.  Its ``expr`` attribute is the group's sub-expression, a hashable tuple of steps
``(op, args, attrs)``: ``args`` name the group's external inputs ``x0, x1, ...`` (the fused
node's inputs, in order) or earlier steps ``t0, t1, ...``; ``attrs`` is a sorted tuple of
``(name, value)`` pairs; the last step is the output.  For example bias add + relu::

    (("add", ("x0", "x1"), ()), ("relu", ("t0",), ()))

The reference kernel runs the steps one op kernel at a time; the backends run generated code
instead: on NumPy one Python function of in-place ufunc calls (runtime/fused_plan.py), on
CuPy one generated CUDA kernel (runtime/gpu_kernels.py).  The VJP re-emits the primitive ops
and differentiates them with autodiff's own reverse loop (ops/reverse.py), so a fused node is
an ordinary op that can be differentiated.
"""
from __future__ import annotations

from netlang.errors import ShapeError
from netlang.ir.types import TensorType, dim_add, dim_mul
from netlang.ops.registry import REQUIRED, defop, get_op
from netlang.ops.reverse import backpropagate


def input_ref(index: int) -> str:
    return f"x{index}"


def step_ref(index: int) -> str:
    return f"t{index}"


def output_ref(expr: tuple) -> str:
    return step_ref(len(expr) - 1)


# -- types ----------------------------------------------------------------------------------

def step_types(expr: tuple, in_types: list[TensorType]) -> list[TensorType]:
    """Every step's type, by replaying the primitive ops' own shape rules."""
    env = {input_ref(i): t for i, t in enumerate(in_types)}
    out = []
    for j, (op, args, attrs) in enumerate(expr):
        try:
            types = [env[a] for a in args]
        except KeyError as err:
            raise ShapeError(f"fused: step {j} ({op}) refers to {err.args[0]}, which is "
                             f"not an input or an earlier step") from None
        env[step_ref(j)] = get_op(op).shape(*types, **dict(attrs))
        out.append(env[step_ref(j)])
    return out


def _fused_shape(*in_types: TensorType, expr) -> TensorType:
    if not expr:
        raise ShapeError("fused: the expression has no steps")
    return step_types(expr, list(in_types))[-1]


def _fused_flops(out_type, *in_types, expr):
    """The steps' own FLOPs added up (one per element for a step without a rule); where
    symbolic counts do not add up exactly, one per output element per step."""
    env = {input_ref(i): t for i, t in enumerate(in_types)}
    total = None
    for j, ((op, args, attrs), t) in enumerate(zip(expr, step_types(expr, list(in_types)))):
        env[step_ref(j)] = t
        rule = get_op(op).flops
        flops = t.numel() if rule is None else rule(t, *[env[a] for a in args], **dict(attrs))
        total = flops if total is None else dim_add(total, flops)
        if total is None:
            return dim_mul(out_type.numel(), len(expr))
    return total


def format_expr(expr: tuple, names: list[str] | None = None) -> str:
    """The sub-expression as one formula: ``relu(add(x0, x1))`` (for reports).

    A step read more than once is named and written once, ``let t0 = tanh(x0) in mul(t0, t0)``:
    inlined, a chain of such steps would double the text at every link."""
    text = {input_ref(i): name for i, name in enumerate(names or [])}
    uses: dict[str, int] = {}
    for _, args, _ in expr:
        for a in args:
            uses[a] = uses.get(a, 0) + 1
    bindings = []
    for j, (op, args, attrs) in enumerate(expr):
        parts = [text.get(a, a) for a in args]
        parts += [f"{k}={v}" for k, v in attrs]
        formula = f"{op}({', '.join(parts)})"
        if uses.get(step_ref(j), 0) > 1:
            name = f"t{len(bindings)}"
            bindings.append(f"{name} = {formula}")
            formula = name
        text[step_ref(j)] = formula
    result = text[output_ref(expr)]
    return f"let {'; '.join(bindings)} in {result}" if bindings else result


# -- the reference kernel -----------------------------------------------------------------

def fused_kernel(xp, *arrays, expr):
    """The sub-expression, step by step, with each op's own reference kernel (the backends
    run generated code instead: runtime/fused_plan.py, runtime/gpu_kernels.py)."""
    env = {input_ref(i): a for i, a in enumerate(arrays)}
    for j, (op, args, attrs) in enumerate(expr):
        env[step_ref(j)] = get_op(op).kernel(xp, *[env[a] for a in args], **dict(attrs))
    return env[output_ref(expr)]


# -- gradient ---------------------------------------------------------------------------------

def emit_steps(b, inputs: tuple[int, ...], expr: tuple) -> dict[str, int]:
    """Emit the group's primitive ops as ordinary IR; ref -> value id."""
    env = {input_ref(i): v for i, v in enumerate(inputs)}
    for j, (op, args, attrs) in enumerate(expr):
        env[step_ref(j)] = b.op(op, *[env[a] for a in args], **dict(attrs))
    return env


def _fused_vjp(b, node, g):
    """Re-emit the primitives, then autodiff's reverse loop over them alone (partial
    derivatives: nothing flows past the group's inputs)."""
    expr = node.attrs["expr"]
    env = emit_steps(b, node.inputs, expr)
    return tuple(backpropagate(b, env[output_ref(expr)], list(node.inputs), seed=g,
                               partial=True))


defop("fused", arity=None, shape=_fused_shape, kernel=fused_kernel, vjp=_fused_vjp,
      attrs={"expr": REQUIRED}, flops=_fused_flops,
      doc="A group of elementwise ops run as one kernel (made by the fusion pass).")
