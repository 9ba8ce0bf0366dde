"""Minimum-cost assignment for the tracker, in numpy (no scipy in the runtime install).

A port of the shortest-augmenting-path algorithm of SciPy's
``scipy.optimize.linear_sum_assignment`` (D. F. Crouse, "On implementing 2D rectangular
assignment algorithms", IEEE TAES 2016), with its tie-breaking, so it returns the same
pairs; the inner loop over columns is vectorised.
"""

from __future__ import annotations

import numpy as np


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a minimum-cost matching of the (N, M) ``cost`` matrix:
    ``min(N, M)`` pairs, rows ascending, as SciPy returns them. Costs must be finite."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-d matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("cost matrix has infinite or NaN entries")
    transpose = cost.shape[1] < cost.shape[0]
    if transpose:
        cost = cost.T
    nr, nc = cost.shape
    u, v = np.zeros(nr), np.zeros(nc)
    col4row, row4col = np.full(nr, -1), np.full(nc, -1)
    path = np.full(nc, -1)
    for cur_row in range(nr):
        shortest = np.full(nc, np.inf)
        rows_seen = np.zeros(nr, bool)
        cols_seen = np.zeros(nc, bool)
        remaining = list(range(nc - 1, -1, -1))
        min_val, sink, i = 0.0, -1, cur_row
        while sink == -1:
            rows_seen[i] = True
            rem = np.asarray(remaining)
            reduced = min_val + cost[i, rem] - u[i] - v[rem]
            better = reduced < shortest[rem]
            path[rem[better]] = i
            shortest[rem] = np.where(better, reduced, shortest[rem])
            values = shortest[rem]
            lowest = values.min()
            ties = np.flatnonzero(values == lowest)
            free = ties[1:][row4col[rem[ties[1:]]] == -1]  # SciPy prefers a later tie that ends the path
            index = int(free[-1]) if len(free) else int(ties[0])
            min_val = float(lowest)
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            cols_seen[j] = True
            remaining[index] = remaining[-1]
            remaining.pop()
        u[cur_row] += min_val
        others = rows_seen.copy()
        others[cur_row] = False
        u[others] += min_val - shortest[col4row[others]]
        v[cols_seen] -= min_val - shortest[cols_seen]
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            col4row[i], j = j, col4row[i]
            if i == cur_row:
                break
    if transpose:
        order = np.argsort(col4row, kind="stable")
        return col4row[order], order
    return np.arange(nr), col4row
