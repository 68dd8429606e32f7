"""Property cases for ops/random.py (shape and dtype only: dropout_mask has no gradient)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tests.ops.harness import array, op_case, shape


@op_case("dropout_mask", grad=False)
def dropout_mask_rates(draw):
    rate = draw(st.sampled_from([0.0, 0.25, 0.5, 0.9]))
    return [array(draw, shape(draw))], {"rate": rate}


@op_case("dropout_mask_of", grad=False)
def dropout_mask_of_rates(draw):
    rate = draw(st.sampled_from([0.0, 0.25, 0.5, 0.9]))
    return [array(draw, shape(draw)), np.float64(rate)], {}
