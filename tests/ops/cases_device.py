"""Property cases for ops/device.py: ``transfer`` on one backend (the reference kernel is the
copy's value; tests/runtime/test_placement.py runs it between two backends), and its VJP, a
transfer back, placed on the source device: the CPU here, which every machine has."""
from __future__ import annotations

from tests.ops.harness import array, op_case, shape


@op_case("transfer")
def transfer_to_the_gpu(draw):
    return [array(draw, shape(draw))], {"device": "gpu", "source": "cpu"}
