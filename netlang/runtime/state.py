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
        for name, value in arrays.items():
            self.arrays[name] = self.backend_for(name).asarray(value)

    @classmethod
    def initialize(cls, graph: Graph, backend: Backend, seed: int = 0,
                   backend_of: Callable | None = None) -> State:
        """Create every parameter and state variable of ``graph`` from its initializer, on
        ``backend``, or where ``backend_of(node)`` says (a variable declared in an ``on``
        block lives on that device)."""
        state = cls(backend)
        for table in (graph.params, graph.state):
            for name, nid in table.items():
                node = graph.nodes[nid]
                home = backend if backend_of is None else backend_of(node)
                if home is not backend:
                    state.placed[name] = home
                if not node.type.is_static:
                    raise ValueError(f"variable {name} has a symbolic shape {node.type}")
                try:
                    value = initialize(node.attrs["init"], node.type.shape,
                                       node.type.dtype.numpy, param_rng(seed, name))
                    state[name] = home.asarray(value)
                except DeviceError as err:       # a dtype the device cannot hold
                    raise err.with_span(node.span) from None
                except MemoryError:
                    size = human_bytes(tensor_bytes(node.type, 1))
                    raise ExecutionError(
                        f"the variable '{name}' ({node.type}) needs {size}, more memory than "
                        f"this machine can allocate", node.span,
                        hint="make the layer smaller (netlang check warns about sizes that "
                             "exceed the memory)") from None
        return state
