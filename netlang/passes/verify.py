"""The IR verifier: checks the invariants every pass must keep, and shows where one broke.

Checked: each node refers only to earlier nodes; its op exists, with the right number of
inputs and known attributes; its type is what the op's shape rule gives today; a constant's
value matches its type; every role (inputs, parameters, state, outputs, updates) names a node
of the right kind, and each update has its variable's type.  An error prints the IR around
the bad node with a marker, like JAX's ``check_jaxpr`` and FX's ``lint``.
"""
from __future__ import annotations

from netlang.errors import IRError, NetlangError
from netlang.ir.graph import Graph, Node
from netlang.ir.printer import format_node
from netlang.ops.registry import OPS

CONTEXT = 3   # lines of IR shown before and after the bad node
SOURCE_KINDS = {"inputs": "input", "params": "param", "state": "state"}


def verify_graph(graph: Graph) -> tuple[Graph, str]:
    """Raise ``IRError`` at the first broken invariant; otherwise return the graph as is."""
    seen: set[int] = set()
    for nid, node in graph.nodes.items():
        problem = _node_problem(graph, nid, node, seen)
        if problem:
            raise IRError(f"%{nid} {problem}\n{ir_context(graph, nid)}", node.span)
        seen.add(nid)
    problem = _role_problem(graph)
    if problem:
        raise IRError(problem)
    return graph, f"{len(graph)} nodes well formed"


def _node_problem(graph: Graph, nid: int, node: Node, seen: set[int]) -> str | None:
    if node.id != nid:
        return f"is stored under id {nid} but says it is %{node.id}"
    later = [i for i in node.inputs if i not in seen]
    if later:
        return f"uses {', '.join(f'%{i}' for i in later)} before it is defined"
    opdef = OPS.get(node.op)
    if opdef is None:
        return f"has an unknown op '{node.op}'"
    if opdef.arity is not None and len(node.inputs) != opdef.arity:
        return f"{node.op} takes {opdef.arity} input(s) but has {len(node.inputs)}"
    unknown = sorted(set(node.attrs) - set(opdef.attrs))
    if unknown:
        return f"{node.op} has unknown attribute(s) {', '.join(unknown)}"
    if node.is_source("const"):
        return _const_problem(node)
    if node.is_source():
        return None
    return _type_problem(graph, node, opdef)


def _const_problem(node: Node) -> str | None:
    value = node.attrs.get("value")
    if value is None or tuple(value.shape) != node.type.shape or (
            value.dtype != node.type.dtype.numpy):
        got = "no value" if value is None else f"{value.dtype}{list(value.shape)}"
        return f"is a constant typed {node.type} holding {got}"
    return None


def _type_problem(graph: Graph, node: Node, opdef) -> str | None:
    try:
        expected = opdef.shape(*(graph.nodes[i].type for i in node.inputs), **node.attrs)
    except NetlangError as err:
        return f"{node.op} no longer type-checks: {err.message}"
    except (TypeError, ValueError, KeyError) as err:
        return f"{node.op}'s shape rule fails on it: {err}"
    if expected != node.type:
        return f"is typed {node.type} but {node.op}'s shape rule gives {expected}"
    return None


def _role_problem(graph: Graph) -> str | None:
    for role, op in SOURCE_KINDS.items():
        for name, nid in getattr(graph, role).items():
            if nid not in graph.nodes or graph.nodes[nid].op != op:
                return f"{role} entry '{name}' points at %{nid}, which is not an {op} node"
    for role in ("outputs", "values", "updates"):
        for name, nid in getattr(graph, role).items():
            if nid not in graph.nodes:
                return f"{role} entry '{name}' points at %{nid}, which is not in the graph"
    for name, nid in graph.updates.items():
        var = graph.state.get(name, graph.params.get(name))
        if var is None:
            return f"update of '{name}', which is neither state nor a parameter"
        if graph.nodes[var].type != graph.nodes[nid].type:
            return (f"update of '{name}' has type {graph.nodes[nid].type}, but the variable "
                    f"is {graph.nodes[var].type}")
    if graph.loss is not None and graph.loss not in graph.outputs:
        return f"the loss '{graph.loss}' is not an output"
    return None


def ir_context(graph: Graph, nid: int) -> str:
    """The printed IR around node ``nid``, the node marked with ``>>``."""
    ids = list(graph.nodes)
    at = ids.index(nid)
    lines = []
    for i in ids[max(0, at - CONTEXT): at + CONTEXT + 1]:
        mark = ">> " if i == nid else "   "
        lines.append(mark + _safe_format(graph, graph.nodes[i]))
    return "\n".join(lines)


def _safe_format(graph: Graph, node: Node) -> str:
    try:
        return format_node(graph, node)
    except KeyError:  # an input that does not exist: print the ids as they are
        args = ", ".join(f"%{i}" for i in node.inputs)
        return f"%{node.id}: {node.type} = {node.op}({args})"
