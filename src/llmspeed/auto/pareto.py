"""Pareto fronts of measured trials: maximize one figure, minimize another (e.g. decode tok/s vs ΔPPL)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a = (gain, cost) dominates b: no worse in both (gain higher-or-equal, cost lower-or-equal), better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (gain to maximize, cost to minimize), sorted by cost.

    Non-finite points never enter the front; of exact duplicates the first is kept.
    """
    idx = [i for i, p in enumerate(points) if math.isfinite(p[0]) and math.isfinite(p[1])]
    front = []
    for i in idx:
        if any(dominates(points[j], points[i]) for j in idx if j != i):
            continue
        if any(points[j] == points[i] for j in front):
            continue
        front.append(i)
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))
