"""A PNG sheet of detections drawn on frames, for people to look at.

Rows are cameras (up to ``max_cameras``, spread over the rig), columns are instants
spread over the sequence; the left hand is drawn in blue, the right in orange, each
point a dot and each bone a line. Tiles are scaled to ``tile_width`` px.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from data_schemas.atomic import atomic_path
from data_schemas.keypoints import HAND_BONES, N_HAND_JOINTS
from data_schemas.keypoints2d import Keypoints2D

COLORS = ((255, 140, 0), (0, 140, 255))  # BGR: left blue, right orange


def draw_hands(image: np.ndarray, row: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Draw one (42, 3) keypoint row on a copy of ``image`` resized by ``scale``."""
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else image.copy()
    r = max(2, int(round(out.shape[0] / 200)))
    for side in range(2):
        hand = row[side * N_HAND_JOINTS:(side + 1) * N_HAND_JOINTS]
        ok = hand[:, 2] > 0
        pts = np.rint(np.nan_to_num(hand[:, :2]) * scale).astype(int)
        for a, b in HAND_BONES:
            if ok[a] and ok[b]:
                cv2.line(out, tuple(pts[a]), tuple(pts[b]), COLORS[side], 1, cv2.LINE_AA)
        for p in pts[ok]:
            cv2.circle(out, tuple(p), r, COLORS[side], -1, cv2.LINE_AA)
    return out


def write_overlay(path: Path, take, kp: Keypoints2D, max_cameras: int = 6, columns: int = 4,
                  tile_width: int = 320) -> Path:
    """Draw ``kp`` on frames of ``take`` (data_schemas.takes.Take) and write the sheet to ``path``."""
    C, F = len(kp.cameras), len(kp.frames)
    cams = sorted(set(np.linspace(0, C - 1, min(C, max_cameras)).round().astype(int)))
    cols = sorted(set(np.linspace(0, F - 1, min(F, columns)).round().astype(int)))
    rows = []
    for c in cams:
        W, H = kp.image_sizes[c]
        scale = tile_width / W
        tiles = [draw_hands(frame, kp.keypoints[c, cols[k]], scale)
                 for k, (_, frame) in enumerate(take.read(kp.cameras[c], [int(kp.frames[i]) for i in cols]))]
        label = tiles[0]
        cv2.putText(label, kp.cameras[c], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.hstack(tiles + [np.zeros_like(tiles[0])] * (len(cols) - len(tiles))))
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", sheet)
        tmp.write_bytes(buf.tobytes())
    return path
