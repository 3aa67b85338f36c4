"""Prompt lookup (n-gram) proposals: the tokens that followed the latest earlier occurrence of the request's
last n tokens, in its prompt and generated text (Saxena's prompt lookup decoding; HF `prompt_lookup_num_tokens`)."""

from __future__ import annotations

import numpy as np


def propose_ngram(ids: list[int] | np.ndarray, k: int, n_max: int = 3, n_min: int = 2) -> list[int]:
    """Up to k proposed tokens: for n from n_max down to n_min, find the latest earlier position where the last n
    tokens of `ids` occur, and propose what followed it. [] when no n-gram of these lengths recurs."""
    arr = np.asarray(ids, dtype=np.int64)  # [N]
    N = arr.shape[0]
    if k <= 0 or N < n_min + 1:
        return []
    for n in range(min(n_max, N - 1), n_min - 1, -1):
        tail = arr[N - n:]  # [n]
        windows = np.lib.stride_tricks.sliding_window_view(arr[:N - 1], n)  # [N-n, n]: starts 0..N-n-1
        hits = np.flatnonzero((windows == tail).all(axis=1))
        if hits.size:
            # the latest match with k tokens after it (the freshest context); in text that repeats with a short
            # period (the latest match is just behind the tail) the earliest match, whose continuation is longest
            full = hits[hits + n + k <= N]
            start = int(full[-1] if full.size else hits[0]) + n  # its continuation begins here (< N)
            return arr[start:start + k].tolist()
    return []
