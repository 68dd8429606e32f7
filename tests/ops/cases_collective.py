"""Property cases for ops/collective.py: allreduce with the reduction of a one-rank run (the
sum over one rank is the value itself); tests/train/test_distributed.py runs it on two."""
from __future__ import annotations

from hypothesis import strategies as st

from netlang.ops import collective
from tests.ops.harness import array, op_case, shape

if not collective.installed():
    collective.install(lambda x, compress: x.astype(x.dtype, copy=True))


@op_case("allreduce", grad=False)
def allreduce_one_rank(draw):
    return [array(draw, shape(draw))], {"compress": draw(st.sampled_from([None, "f16"]))}
