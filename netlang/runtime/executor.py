"""The interpreter: run a ``Program``'s steps over an env dict, freeing dead buffers.

Source nodes take their values from the feeds (inputs), the ``State`` (parameters and
state) or their attributes (constants); every other node calls its op's kernel over the
backend's array module.  A failing kernel is reported with the node and its spec location.
"""
from __future__ import annotations

from typing import Any, Callable

from netlang.errors import ExecutionError, NetlangError
from netlang.ops.registry import get_op
from netlang.runtime.backend import Backend
from netlang.runtime.program import Program


class Executor:
    def __init__(self, backend: Backend, rng=None):
        self.backend = backend
        self.rng = rng
        self.kernel_calls = 0           # counted so tests can prove what did not run
        self._consts: dict[int, Any] = {}
        self.on_step: Callable | None = None   # hook(node, value), e.g. non-finite checks

    def const_value(self, node):
        cached = self._consts.get(node.id)
        if cached is None or cached[0] is not node.attrs["value"]:
            cached = (node.attrs["value"], self.backend.asarray(node.attrs["value"]))
            self._consts[node.id] = cached
        return cached[1]

    def run(self, program: Program, feeds: dict[int, Any], store) -> list[Any]:
        xp = self.backend.xp
        env: dict[int, Any] = {}
        for index, node in enumerate(program.steps):
            if node.id in program.fed:
                value = feeds[node.id]
            elif node.op in ("param", "state"):
                value = store[node.name]
            elif node.op == "const":
                value = self.const_value(node)
            else:
                value = self._call(xp, node, [env[i] for i in node.inputs])
            env[node.id] = value
            if self.on_step is not None:
                self.on_step(node, value)
            for dead in program.free_after[index]:
                env.pop(dead, None)
        for name, value_id in program.updates.items():
            store[name] = env[value_id]
        return [env[f] for f in program.fetches]

    def _call(self, xp, node, args):
        opdef = get_op(node.op)
        if opdef.kernel is None:
            raise ExecutionError(f"op '{node.op}' cannot run (no kernel)", node.span)
        self.kernel_calls += 1
        try:
            if opdef.random:
                return opdef.kernel(xp, *args, rng=self.rng, **node.attrs)
            return opdef.kernel(xp, *args, **node.attrs)
        except NetlangError:
            raise
        except Exception as err:
            shapes = ", ".join(str(getattr(a, "shape", "?")) for a in args)
            raise ExecutionError(f"{node.op} (node %{node.id}) failed on inputs of shapes "
                                 f"{shapes}: {err}", node.span) from err
