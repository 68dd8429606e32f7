"""Property cases for ops/collective.py: allreduce, allreduce_start and allreduce_wait with
the reduction of a one-rank run (the sum over one rank is the value itself, so allreduce's
VJP, the same sum of the cotangent, is the cotangent); tests/train/test_distributed.py runs
them on two ranks and tests/train/test_nccl.py through MPI's and NCCL's one-rank worlds."""
from __future__ import annotations

from hypothesis import strategies as st

from netlang.ops import collective
from tests.ops.harness import array, op_case, shape

if not collective.installed():
    collective.install(lambda x, compress=None: x.astype(x.dtype, copy=True),
                       lambda x, compress=None: x.astype(x.dtype, copy=True),
                       lambda started: started)


@op_case("allreduce")
def allreduce_one_rank(draw):
    return [array(draw, shape(draw))], {"compress": draw(st.sampled_from([None, "f16"]))}


@op_case("allreduce_start", grad=False)
def allreduce_start_one_rank(draw):
    return [array(draw, shape(draw))], {"compress": draw(st.sampled_from([None, "f16"]))}


@op_case("allreduce_wait", grad=False)
def allreduce_wait_one_rank(draw):
    return [array(draw, shape(draw))], {}
