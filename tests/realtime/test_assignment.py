"""The tracker's assignment solver returns exactly SciPy's pairs (SciPy is the test's
reference only; the runtime install does not have it)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_assignment

from realtime.assignment import linear_sum_assignment


@pytest.mark.parametrize("ties", [False, True])
def test_same_pairs_as_scipy(ties):
    rng = np.random.default_rng(1 + ties)
    for _ in range(400):
        n, m = rng.integers(1, 13, 2)
        cost = rng.integers(0, 4, (n, m)).astype(np.float64) if ties else rng.random((n, m)).astype(np.float32)
        rows, cols = linear_sum_assignment(cost)
        want_rows, want_cols = scipy_assignment(cost)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(cols, want_cols)


def test_empty_and_bad_input():
    for shape in ((0, 3), (3, 0), (0, 0)):
        rows, cols = linear_sum_assignment(np.zeros(shape))
        assert len(rows) == len(cols) == 0
    with pytest.raises(ValueError, match="infinite or NaN"):
        linear_sum_assignment(np.array([[np.nan, 1.0]]))
