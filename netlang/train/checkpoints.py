"""Training checkpoints on top of ``runtime.checkpoint`` (atomic .npz files with a header).

A training checkpoint holds the train step's whole state (parameters, optimizer slots,
batchnorm statistics), the dropout RNG's state, the epoch and step reached, the data
normalization, and, next to the train graph's hash and variables that the runtime writes,
the *network's* own hash and variables.  Resuming compares the train graph exactly;
``eval`` and ``predict`` compare only the network's variables (they need no optimizer
slots), and a network that changed without changing its variables only gets a note.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from netlang.ir.graph import Graph
from netlang.runtime.checkpoint import (
    check_compatible,
    check_complete,
    differences,
    network_hash,
    read,
    refuse_another_network,
    save,
    variables,
)

__all__ = ["check_compatible", "check_complete", "check_network", "network_fields", "network_hash", "read",
           "save", "variables"]


def network_fields(network: Graph) -> dict[str, Any]:
    """What a training checkpoint records of the network it trains (beside the train graph)."""
    return {"network_hash": network_hash(network), "network_variables": variables(network)}


def check_network(path: str | Path, network: Graph, meta: dict[str, Any]) -> list[str]:
    """Refuse a checkpoint whose network parameters differ from ``network``'s (naming
    them); returns notes, e.g. that the network changed in a way parameters don't show."""
    recorded = meta.get("network_variables", meta.get("variables", {}))
    refuse_another_network(path, meta, differences(network, {"variables": recorded}),
                           what="parameters",
                           hint="use a checkpoint written by training this spec")
    if meta.get("network_hash", meta.get("hash")) != network_hash(network):
        return [(f"note: the network changed since {path} was written (its parameters did "
                f"not); loading them anyway")]
    return []

