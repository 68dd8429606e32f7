"""``transfer``: a value copied to another device, where ``on cpu { }`` / ``on gpu { }`` places
its producer and a consumer apart (passes/placement.py inserts it).

The node is tagged with the device it copies to (``on:gpu``), and ``source`` names the device
it copies from.  The executor runs it as that host <-> device copy (``Executor._kernel``);
the reference kernel, for code that runs a graph on one backend (folding, gradcheck), is the
identity.  Its gradient copies the cotangent back.
"""
from __future__ import annotations

from netlang.errors import ShapeError
from netlang.ir.graph import DEVICES
from netlang.ir.types import TensorType
from netlang.ops.registry import REQUIRED, defop
from netlang.ops.rules import no_flops


def _transfer_rule(x: TensorType, device, source) -> TensorType:
    for what, name in (("device", device), ("source", source)):
        if name not in DEVICES:
            raise ShapeError(f"transfer: {what} must be one of {', '.join(DEVICES)}, "
                             f"got {name!r}")
    return x


def _transfer_kernel(xp, x, device, source):
    return xp.asarray(x)


def _transfer_vjp(b, n, g):
    with b.placed(n.attrs["source"]):
        return (b.transfer(g, device=n.attrs["source"], source=n.attrs["device"]),)


defop("transfer", arity=1, shape=_transfer_rule, attrs={"device": REQUIRED, "source": REQUIRED},
      flops=no_flops, kernel=_transfer_kernel, vjp=_transfer_vjp,
      doc="x copied from device source to device (cpu <-> gpu), where on-blocks place its "
          "producer and a consumer apart; its gradient copies back.")
