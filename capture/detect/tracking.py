"""Keep each hand's identity stable over one camera's frames (left/right consistency).

A per-image handedness label flips now and then (two hands close together, a hand seen
edge-on), which would split a hand's track between the left and right rows. Here the
side of every candidate is chosen for the whole camera at once, by Viterbi over the
frames:

- states of frame i: the ways to give its (at most two) candidates distinct sides,
  e.g. (a -> left, b -> right) or (a -> right, b -> left);
- unary cost: the handedness evidence against the choice, softplus(-+left_logit) =
  -log P(side) under the backend's log-odds;
- pairwise cost between frames i-1 and i, in units of hand size d (mean keypoint
  distance over the diagonal of the hand's keypoint box), times ``motion_weight``:
  d between a side's hand in the two frames (it moved), plus max(0, R - d) between a
  side's hand at i-1 and the *other* side's at i (a hand that stayed put but changed
  side), R = ``SAME_HAND``. A hand moves a small fraction of its size per frame and
  the other hand is usually about a hand away, so keeping identity is cheap and
  swapping is dear unless the labels say so for many frames; the second term also
  keeps a lone hand from hopping sides.

A side missing in both frames' pair costs nothing (gaps are bridged by the labels).
"""

from __future__ import annotations

import itertools

import numpy as np

from capture.detect.base import HandCandidate, dedupe, empty_rows, hand_size, mean_distance, put

MOTION_WEIGHT = 8.0
SAME_HAND = 0.5  # hand sizes: closer than this between frames, two detections are one hand


def _states(n: int) -> list[tuple[int | None, int | None]]:
    """(left candidate, right candidate) index pairs giving each of n <= 2 candidates one side."""
    if n == 0:
        return [(None, None)]
    if n == 1:
        return [(0, None), (None, 0)]
    return [(a, b) for a, b in itertools.permutations(range(2), 2)]


def _softplus(x: float) -> float:
    return float(np.logaddexp(0.0, x))


def _unary(state, cands: list[HandCandidate]) -> float:
    left, right = state
    cost = 0.0
    if left is not None:
        cost += _softplus(-cands[left].left_logit)
    if right is not None:
        cost += _softplus(cands[right].left_logit)
    return cost


def _distance(a: HandCandidate, b: HandCandidate) -> float:
    """Mean distance of the keypoints found in both, over the larger hand's size (inf if none shared)."""
    return mean_distance(a, b) / max(hand_size(a), hand_size(b))


def track_sides(per_image: list[list[HandCandidate]], motion_weight: float = MOTION_WEIGHT) -> np.ndarray:
    """Candidates of one camera's consecutive frames -> (F, 42, 3) rows with stable hand sides."""
    frames = [dedupe(c)[:2] for c in per_image]
    F = len(frames)
    rows = empty_rows(F)
    if F == 0:
        return rows
    # 1. Forward pass: best cost of each state of frame i, and the state of i-1 it came from.
    states = [_states(len(c)) for c in frames]
    cost = [np.array([_unary(s, frames[0]) for s in states[0]])]
    back: list[np.ndarray] = [np.zeros(len(states[0]), int)]
    for i in range(1, F):
        prev, cur = frames[i - 1], frames[i]
        step = np.zeros((len(states[i - 1]), len(states[i])))  # (S_prev, S_cur)
        for p, sp in enumerate(states[i - 1]):
            for q, sq in enumerate(states[i]):
                for side in range(2):
                    if sp[side] is None:
                        continue
                    if sq[side] is not None:
                        d = _distance(prev[sp[side]], cur[sq[side]])
                        step[p, q] += motion_weight * d if np.isfinite(d) else 0.0  # no shared points: no say
                    if sq[1 - side] is not None:
                        d = _distance(prev[sp[side]], cur[sq[1 - side]])
                        step[p, q] += motion_weight * max(0.0, SAME_HAND - d)
        total = cost[-1][:, None] + step  # (S_prev, S_cur)
        back.append(total.argmin(axis=0))
        cost.append(total.min(axis=0) + np.array([_unary(s, cur) for s in states[i]]))
    # 2. Backtrack the cheapest path and write each frame's candidates to their sides.
    q = int(cost[-1].argmin())
    for i in range(F - 1, -1, -1):
        for side, c in enumerate(states[i][q]):
            if c is not None:
                put(rows[i], side, frames[i][c])
        q = int(back[i][q])
    return rows
