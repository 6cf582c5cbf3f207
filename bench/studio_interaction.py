"""The studio's interaction level against the paper's dataset: how much of the motion is contact.

Each motion family is made for a few seeds (``make_motion`` + ``pose_motion``, no rendering)
and measured by the dataset statistics' rule (``hand_model.contact_frames``):

- contact: share of frames whose two meshes have a vertex pair under 3 mm apart, or
  interpenetrate (paper: 57.3%);
- mindist_cm: per frame the smallest left-right joint distance, averaged over frames (paper:
  3.61 cm);
- max_depth_mm: the deepest vertex of one hand inside the other (``hand_model.contact``) over
  all frames; p99_depth_mm its 99th percentile over the contacting frames;
- bouts / bout_s: contact bouts (runs of contacting frames) per sequence and their mean length.

    .venv/bin/python -m bench.studio_interaction [--seeds 3] [--frames 300] [--fps 30]

One line per family, then the last line: ``studio_interaction contact=<share> mindist_cm=<mean>
max_depth_mm=<max> families_ok=<n>/4 paper_contact=0.573 paper_mindist_cm=3.61 seconds=<s>``
(issue 20 targets, per family: contact >= 0.50, mindist_cm <= 3.8, max_depth_mm <= 2).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from capture.studio.motion import FAMILIES, make_motion, pose_motion
from hand_model.contact import hand_contact
from hand_model.contact_frames import contact_frames, shortest_joint_distance
from hand_model.model import HandModel

PAPER_CONTACT, PAPER_MINDIST_CM = 0.573, 3.61
TARGET_CONTACT, TARGET_MINDIST_CM, TARGET_DEPTH_MM = 0.50, 3.8, 2.0


@dataclass
class Interaction:
    contact: np.ndarray  # (F,) bool, contacting by the stats rule
    shortest: np.ndarray  # (F,) m, smallest left-right joint distance
    depth: np.ndarray  # (F,) m, deepest vertex of one hand inside the other


def measure(family: str, seed: int, n_frames: int, fps: float, model: HandModel) -> Interaction:
    """One seeded sequence of ``family``, measured frame by frame."""
    m = make_motion(family, n_frames, fps, seed, model)
    v, j = pose_motion(m, model)
    c = contact_frames(model, m.global_orient, m.hand_pose, m.betas, m.transl, np.ones((n_frames, 2), bool))
    return Interaction(contact=c.contact, shortest=shortest_joint_distance(j.reshape(n_frames, 42, 3)),
                       depth=hand_contact(v, model.faces, with_distance=False).depth)


def bouts(contact: np.ndarray) -> np.ndarray:
    """(F,) bool -> lengths (frames) of the runs of True."""
    edges = np.diff(np.concatenate([[0], contact.astype(int), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def summary(runs: list[Interaction], fps: float) -> dict:
    contact = np.concatenate([r.contact for r in runs])
    depth = np.concatenate([r.depth for r in runs])
    lengths = np.concatenate([bouts(r.contact) for r in runs])
    return {"contact": float(contact.mean()),
            "mindist_cm": 100 * float(np.concatenate([r.shortest for r in runs]).mean()),
            "max_depth_mm": 1000 * float(depth.max()),
            "p99_depth_mm": 1000 * float(np.percentile(depth[contact], 99)) if contact.any() else 0.0,
            "bouts": len(lengths) / len(runs), "bout_s": float(lengths.mean() / fps) if len(lengths) else 0.0}


def meets_targets(s: dict) -> bool:
    return (s["contact"] >= TARGET_CONTACT and s["mindist_cm"] <= TARGET_MINDIST_CM
            and s["max_depth_mm"] <= TARGET_DEPTH_MM)


def _line(name: str, s: dict) -> str:
    return (f"{name} contact={s['contact']:.3f} mindist_cm={s['mindist_cm']:.2f} max_depth_mm={s['max_depth_mm']:.2f} "
            f"p99_depth_mm={s['p99_depth_mm']:.2f} bouts={s['bouts']:.1f} bout_s={s['bout_s']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--fps", type=float, default=30.0)
    args = ap.parse_args()
    model = HandModel()
    t0 = time.perf_counter()
    every, ok = [], 0
    for family in FAMILIES:
        runs = [measure(family, seed, args.frames, args.fps, model) for seed in range(args.seeds)]
        for seed, r in enumerate(runs):
            print("  " + _line(f"{family} seed={seed}", summary([r], args.fps)))
        s = summary(runs, args.fps)
        ok += meets_targets(s)
        print(_line(f"family={family}", s) + f" ok={meets_targets(s)}")
        every += runs
    s = summary(every, args.fps)
    print(f"studio_interaction contact={s['contact']:.3f} mindist_cm={s['mindist_cm']:.2f} "
          f"max_depth_mm={s['max_depth_mm']:.2f} families_ok={ok}/{len(FAMILIES)} paper_contact={PAPER_CONTACT} "
          f"paper_mindist_cm={PAPER_MINDIST_CM} seconds={time.perf_counter() - t0:.0f}")


if __name__ == "__main__":
    main()
