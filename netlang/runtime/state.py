"""State: the named arrays that outlive a run (parameters, moving statistics, optimizer slots)."""
from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from netlang.errors import DeviceError, ExecutionError
from netlang.ir.graph import Graph
from netlang.runtime.backend import Backend
from netlang.runtime.initializers import initialize
from netlang.runtime.memory import human_bytes, tensor_bytes
from netlang.runtime.ownership import arena_arrays, arena_dtype, fits, in_arena, sole_holder


def param_rng(seed: int, name: str) -> np.random.Generator:
    """One generator per (seed, parameter name): adding a layer leaves the others unchanged."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


class State:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.arrays: dict[str, object] = {}
        self.placed: dict[str, Backend] = {}   # variables an 'on' block put on another device

    def __getitem__(self, name: str):
        return self.arrays[name]

    def __setitem__(self, name: str, value) -> None:
        self.arrays[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def items(self):
        return self.arrays.items()

    def backend_for(self, name: str) -> Backend:
        """The backend whose device holds variable ``name``."""
        return self.placed.get(name, self.backend)

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {k: self.backend_for(k).to_numpy(v) for k, v in self.arrays.items()}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Set variables to these values: copied into a variable's place in the state's
        arena where nobody else holds its array (it stays where the optimizer's update
        finds it), else as a new array."""
        for name, value in arrays.items():
            value = self.backend_for(name).asarray(value)
            mine = self.arrays
            if (name in mine and sole_holder(mine, name) and in_arena(mine[name])
                    and fits(mine[name], value.shape, value.dtype)):
                mine[name][...] = value
            else:
                mine[name] = value

    @classmethod
    def initialize(cls, graph: Graph, backend: Backend, seed: int = 0,
                   backend_of: Callable | None = None) -> State:
        """Create every parameter and state variable of ``graph`` from its initializer, on
        ``backend``, or where ``backend_of(node)`` says (a variable declared in an ``on``
        block lives on that device).  On the CPU the float variables share one
        ``VariableArena`` (``runtime/ownership.py``), in the graph's order: parameters,
        then state (optimizer slots, moving statistics)."""
        state = cls(backend)
        variables = []
        for table in (graph.params, graph.state):
            for name, nid in table.items():
                node = graph.nodes[nid]
                home = backend if backend_of is None else backend_of(node)
                if home is not backend:
                    state.placed[name] = home
                if not node.type.is_static:
                    raise ValueError(f"variable {name} has a symbolic shape {node.type}")
                variables.append((name, node, home))
        side_by_side = [(name, node) for name, node, home in variables
                        if home is backend and backend.name == "cpu"
                        and arena_dtype(node.type.dtype.numpy)]
        places = dict(zip([name for name, _ in side_by_side], _arena_places(
            [node for _, node in side_by_side])))
        for name, node, home in variables:
            try:
                value = initialize(node.attrs["init"], node.type.shape,
                                   node.type.dtype.numpy, param_rng(seed, name))
                if name in places:
                    places[name][...] = value
                    state[name] = places[name]
                else:
                    state[name] = home.asarray(value)
            except DeviceError as err:       # a dtype the device cannot hold
                raise err.with_span(node.span) from None
            except MemoryError:
                raise _too_big(name, node) from None
        return state


def _arena_places(nodes: list) -> list[np.ndarray]:
    """The variables' arrays in one ``VariableArena``; none where that cannot be allocated
    (each variable then gets an array of its own, and the one too large is named)."""
    if not nodes:
        return []
    try:
        return arena_arrays([(n.type.shape, n.type.dtype.numpy) for n in nodes])
    except (MemoryError, OSError, OverflowError):
        return []


def _too_big(name: str, node) -> ExecutionError:
    size = human_bytes(tensor_bytes(node.type, 1))
    return ExecutionError(
        f"the variable '{name}' ({node.type}) needs {size}, more memory than this machine can "
        f"allocate", node.span,
        hint="make the layer smaller (netlang check warns about sizes that exceed the memory)")
