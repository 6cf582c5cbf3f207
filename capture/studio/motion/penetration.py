"""The penetration push (step 3 of ``capture.studio.motion``): frames where one hand is more than
``DEPTH_SOFT`` inside the other are pushed apart along the contact normal; the push is the running
maximum of the need smoothed by a window of the same width, so it is at least the need and smooth
in time; repeated until every frame is below ``DEPTH_SOFT``.
"""

from __future__ import annotations

import numpy as np

from capture.studio.motion.sampling import Frames
from hand_model.contact import hand_contact

PRESS = 0.0012  # m, overlap of a contact: a light press
DEPTH_SOFT = 0.0018  # m, deeper frames are pushed apart (every frame ends under 2 mm)


def _smooth_envelope(need: np.ndarray, half: int) -> np.ndarray:
    """A smooth curve >= need: the running maximum over +-half frames, averaged by a Hann window
    of the same support (each output averages maxima that all cover the centre frame)."""
    F = len(need)
    pad = np.pad(need, half)
    runmax = np.max(np.stack([pad[k:k + F] for k in range(2 * half + 1)]), axis=0)
    win = np.hanning(2 * half + 3)[1:-1]
    win /= win.sum()
    return np.convolve(np.pad(runmax, half, mode="edge"), win, mode="valid")


def resolve_penetration(verts: np.ndarray, frames: Frames, faces, fps: float,
                        max_passes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Push the hands apart along each frame's push direction where one is deeper than DEPTH_SOFT
    in the other. Returns the (F, 2, 3) wrist shifts and the last measured (F,) depths."""
    F = len(verts)
    dirs = frames.push[:, None] * np.stack([-frames.weights[:, 0], frames.weights[:, 1]], 1)[..., None]
    amount = np.zeros(F)
    depth = hand_contact(verts, faces, with_distance=False).depth
    half = max(2, int(round(0.2 * fps)))
    gain = np.ones(F)
    for _ in range(max_passes):
        bad = depth > DEPTH_SOFT
        if not bad.any():
            break
        need = np.where(bad, (depth - PRESS) * gain, 0.0)
        gain = np.where(bad, gain * 1.5, gain)  # the push may be oblique to the contact normal
        # a wide need is spread over more frames: the push moves at most ~4 mm a frame
        step = _smooth_envelope(need, max(half, int(np.ceil(need.max() / 0.004))))
        amount = amount + step
        redo = np.flatnonzero(step > 1e-7)
        shifted = verts[redo] + (amount[redo, None, None] * dirs[redo])[:, :, None]
        depth[redo] = hand_contact(shifted, faces, with_distance=False).depth
    return amount[:, None, None] * dirs, depth
