"""Does the real bundled detector see the studio's hands? MediaPipe Hands on studio renders.

Renders sequences of every motion family into the demo dome exactly as ``handdiffuse
studio`` does (written to mp4 and read back, so compression is included), runs
MediaPipe Hands (0.10.14) on every view and scores it against the ground truth
(``capture.studio.detector_check``): detection rate over eligible views (hand wholly in
the image, not covered by the other hand, palm or back within 60 deg of facing the
camera) and median landmark error at 512 px image height. Writes example frames with
the detections drawn to docs/studio_detections.png.

    .venv/bin/python -m bench.studio_detection [--sequences-per-family 2] [--frames 30]

Last line: ``studio_detection views=<n> eligible=<n> rate=<r> median_err_px=<e>``
(issue target: rate >= 0.85, median_err_px <= 10).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from capture.detect.mediapipe import MediaPipeHands
from capture.studio.detector_check import DetectorScore, score_view, studio_takes
from capture.studio.motion import FAMILIES
from capture.studio.rig import DEMO, make_rig
from hand_model.model import HandModel

COLORS = ((255, 128, 0), (0, 200, 255))


def draw(image: np.ndarray, detections: list[np.ndarray], truth_px: np.ndarray, size: int = 360) -> np.ndarray:
    """A square crop around the hands: truth as green dots, each detection's landmarks and bones."""
    from data_schemas.keypoints import HAND_BONES

    scale = 2
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    pt = lambda p: tuple(int(v) for v in np.rint(np.asarray(p) * scale))  # noqa: E731
    for h in range(2):
        for p in truth_px[h]:
            cv2.circle(out, pt(p), 3, (0, 255, 0), -1)
    for k, d in enumerate(detections):
        for a, b in HAND_BONES:
            cv2.line(out, pt(d[a]), pt(d[b]), COLORS[k % 2], 1, cv2.LINE_AA)
        for p in d:
            cv2.circle(out, pt(p), 4, COLORS[k % 2], 1, cv2.LINE_AA)
    lo, hi = truth_px.reshape(-1, 2).min(0) * scale, truth_px.reshape(-1, 2).max(0) * scale
    half = int(max(hi - lo) / 2 + 30)
    c = ((lo + hi) / 2).astype(int)
    padded = cv2.copyMakeBorder(out, half, half, half, half, cv2.BORDER_CONSTANT)  # crops near the border
    crop = padded[c[1]:c[1] + 2 * half, c[0]:c[0] + 2 * half]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences-per-family", type=int, default=2)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--stride", type=int, default=3, help="score every k-th frame")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--examples", type=Path, default=Path("docs/studio_detections.png"))
    args = ap.parse_args()
    rig, _ = make_rig(DEMO, args.seed)
    model = HandModel()
    total, per_family, examples = DetectorScore(), {}, []
    for family in FAMILIES:
        per_family[family] = DetectorScore()
    with MediaPipeHands() as det, tempfile.TemporaryDirectory() as tmp:
        takes = studio_takes(rig, model, DEMO.fps, args.seed, args.sequences_per_family, args.frames,
                             list(range(args.frames)), Path(tmp))
        for take in takes:
            c, cam = take.camera, rig.cameras[take.camera]
            for f in range(0, args.frames, args.stride):
                found = [pts[:, :2] for pts, _, _ in det.hands(take.images[f])]
                s = score_view(found, take.truths[f], cam.size[1])
                per_family[take.family].add(s)
                mine = [e for e in examples if e[0] == take.family]
                if s.eligible >= 1 and len(mine) < 2 and all(e[1] != c for e in mine) and f >= 9:
                    examples.append((take.family, c, draw(take.images[f], found, take.truths[f].pixels)))
    for family, s in per_family.items():
        print(f"  {family:<20} views={s.views:4d} eligible={s.eligible:4d} rate={s.rate:.3f} "
              f"median_err_px={s.median_error_px:.2f}", flush=True)
        total.add(s)
    if examples:
        examples = [e[2] for e in examples]  # two per family, different cameras
        args.examples.parent.mkdir(parents=True, exist_ok=True)
        examples += [np.zeros_like(examples[0])] * (-len(examples) % 4)
        rows = [np.hstack(examples[i:i + 4]) for i in range(0, len(examples), 4)]
        cv2.imwrite(str(args.examples), np.vstack(rows))
    print(f"studio_detection views={total.views} eligible={total.eligible} rate={total.rate:.3f} "
          f"median_err_px={total.median_error_px:.2f}")


if __name__ == "__main__":
    main()
