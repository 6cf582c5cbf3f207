"""Studio speed: the demo session end to end, and render throughput of both presets.

    .venv/bin/python -m bench.studio

Prints ``studio cameras=<n> resolution=<w>x<h> images_per_s=<r>`` per preset (the demo
line from a whole `handdiffuse studio --preset demo` build, board take included, 2
worker processes; the full line from a few 4K frames of hands, 2 workers) and the demo
session's total seconds (issue target: under 180 s on 2 cores).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from capture.studio import build
from capture.studio.build import StudioConfig, build_session
from capture.studio.rig import FULL, make_rig


def full_preset_images_per_s(n_cameras: int = 4, n_frames: int = 3, workers: int = 2) -> float:
    """Hands rendered into the first cameras of the 50-camera 4K dome, through the studio's worker."""
    import multiprocessing as mp

    from capture.studio.motion import make_motion
    from capture.studio.scene import pose_scene
    from hand_model.model import HandModel

    rig, _ = make_rig(FULL, 0)
    model = HandModel()
    motion = make_motion("random_interaction", n_frames, FULL.fps, 0, model)
    scene = pose_scene(model, motion, np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as tmp:
        build._JOB.update(scene=scene, rig=rig, offsets=np.zeros(len(rig), int), lead=0, n_frames=n_frames,
                          fps=FULL.fps, seed=0, videos=Path(tmp))
        t0 = time.perf_counter()
        with mp.get_context("fork").Pool(workers) as pool:
            pool.map(build._render_camera, range(n_cameras))
        seconds = time.perf_counter() - t0
        build._JOB.clear()
    return n_cameras * n_frames / seconds


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = StudioConfig(out=Path(tmp) / "demo", preset="demo")
        s = build_session(cfg)
    print(f"studio demo session: {s.seconds:.1f} s total ({len(s.sequences)} sequences x {cfg.frames} frames, "
          f"board take {cfg.board_frames} frames, {s.images} images)")
    print(f"studio cameras={s.cameras} resolution={s.resolution[0]}x{s.resolution[1]} "
          f"images_per_s={s.images_per_s:.1f}")
    r = full_preset_images_per_s()
    print(f"studio cameras={FULL.n_cameras} resolution={FULL.width}x{FULL.height} images_per_s={r:.2f}")


if __name__ == "__main__":
    main()
