"""Batchnorm's ops as elementwise steps over per-channel vectors, for the fusion pass to merge.

The ``batchnorm`` layer lowers onto a few ops (ops/norm.py): ``batchnorm_apply`` forward, and
in the backward ``batchnorm_grad_x``, ``batch_variance_grad`` and ``mean`` 's VJP
``mean_grad``, whose results one ``add`` sums into the gradient of x.  Each is one pass over
the image, so a batchnorm's backward sweeps it some ten times, and its forward writes the
normalized image only for ``relu`` to read it again.  With the channel axis last, each of these
ops is an elementwise op between the image and a ``[C]`` vector computed from the statistics:

    batchnorm_apply(x, m, v, g, b)   = x * s + (b - m * s)          s = g * rsqrt(v + eps)
    batchnorm_grad_x(dy, v, g)       = dy * s
    batch_variance_grad(dv, x, m)    = (x - m) * (dv / n + dv / n)  n = count(x, other axes)
    mean_grad(dm, x) feeding an add  = the [C] vector dm / n, broadcast by the add itself

This pass writes them so (the same floating-point steps as their kernels, in the same order:
the numbers do not change), and elementwise fusion then makes each chain one loop: relu joins
the forward's normalize-scale-shift, and the gradient of x becomes one pass that reads the
incoming gradient and x.  It only rewrites an op whose every user will join it in a fused
group; elsewhere the op keeps its library kernel (oneDNN's batchnorm) or its own loop.
"""
from __future__ import annotations

from netlang.ir.graph import Graph, Node, device_of
from netlang.passes.fusion import fusible, named_values
from netlang.passes.report import Report, describe, plural, report
from netlang.passes.rewrite import replace_groups

EXPANDED = ("batchnorm_apply", "batchnorm_grad_x", "batch_variance_grad", "mean_grad")
BROADCASTING_USERS = ("add", "sub", "mul")


def _channel_last(graph: Graph, node: Node) -> bool:
    rank = node.type.rank
    return rank > 0 and node.attrs["axis"] % rank == rank - 1


def _fused_by_every_user(graph: Graph, node: Node, users) -> bool:
    """Each user is an elementwise op of this node's shape: fusion takes the node with it."""
    return bool(users) and all(fusible(graph.nodes[u])
                               and graph.nodes[u].type.shape == node.type.shape
                               and device_of(graph.nodes[u]) == device_of(node)
                               for u in users)


def _vector_for_users(graph: Graph, node: Node, users) -> bool:
    """A ``mean_grad`` over every axis but the last, read only by adds (subs, muls) whose
    other operand has its full shape: those can take the [C] vector and broadcast it."""
    like = graph.nodes[node.inputs[1]].type
    rank = like.rank
    axes = node.attrs["axis"]
    axes = (axes,) if isinstance(axes, int) else axes
    if (rank < 2 or axes is None or sorted(a % rank for a in axes) != list(range(rank - 1))
            or not like.dtype.is_float or not users):
        return False
    for u in users:
        user = graph.nodes[u]
        others = [i for i in user.inputs if i != node.id]
        if (user.op not in BROADCASTING_USERS or len(others) != 1 or not fusible(user)
                or graph.nodes[others[0]].type.shape != like.shape):
            return False
    return True


def expandable(graph: Graph, node: Node, users, keep) -> bool:
    if node.op not in EXPANDED or node.id in keep:
        return False
    if node.op == "mean_grad":
        return _vector_for_users(graph, node, users[node.id])
    return _channel_last(graph, node) and _fused_by_every_user(graph, node, users[node.id])


def _scale(b, var: int, gamma: int, epsilon) -> int:
    """gamma * rsqrt(var + epsilon), as ops/norm.py's kernels compute it."""
    inv = b.rsqrt(b.add(var, b.const(epsilon, b.type_of(var).dtype)))
    return b.mul(inv, gamma)


def _other_axes(rank: int) -> tuple[int, ...]:
    return tuple(range(rank - 1))


def _emit(b, node: Node, ins: list[int]) -> int:
    if node.op == "batchnorm_apply":
        x, mean, var, gamma, beta = ins
        scale = _scale(b, var, gamma, node.attrs["epsilon"])
        shift = b.add(b.neg(b.mul(mean, scale)), beta)
        return b.add(b.mul(x, scale), shift)
    if node.op == "batchnorm_grad_x":
        g, var, gamma = ins
        return b.mul(g, _scale(b, var, gamma, node.attrs["epsilon"]))
    if node.op == "batch_variance_grad":
        g, x, mean = ins
        spread = b.mul(g, b.count(x, axis=_other_axes(b.type_of(x).rank), inverse=True))
        return b.mul(b.sub(x, mean), b.add(spread, spread))
    g, like = ins                                                 # mean_grad -> a vector
    return b.div(g, b.count(like, axis=_other_axes(b.type_of(like).rank), inverse=False))


def expand_batchnorm(graph: Graph) -> tuple[Graph, Report]:
    users, keep = graph.users(), named_values(graph)
    chosen = {n.id for n in graph if expandable(graph, n, users, keep)}
    if not chosen:
        return graph, report("no batchnorm ops for elementwise fusion to take")
    items = []

    def emit(b, node, mapped):
        if node.id not in chosen:
            return None
        items.append(f"{describe(graph, node)} as elementwise steps")
        with b.like(node):
            return _emit(b, node, [mapped(i) for i in node.inputs])

    new, mapping = replace_groups(graph, set(), emit)
    return new, report(f"wrote {plural(len(chosen), 'batchnorm op')} as elementwise steps "
                       "over per-channel vectors", items, changed=len(chosen), mapping=mapping)
