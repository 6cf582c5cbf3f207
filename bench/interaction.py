"""How much of the interaction the pipeline keeps: a demo-dome studio session, end to end, against its truth.

A studio session on the demo dome (8 cameras, 640x512; the four motion families in turn), run
through the demo's capture stages (studio, calibrate, detect, triangulate, fit, then redetect with
triangulate and fit again, export: every stage as ``make demo`` runs it, the real detector on the
rendered videos), then compared frame by frame with the studio's ground truth
(``pipeline.versus_truth``, whose docstring defines each figure: fit MPJPE over all frames and over the frames where the hands touch, the share of frames
not handed to training, contact share and mean shortest joint distance of truth and dataset, and
the dataset's per-frame contact precision and recall against the truth).

    .venv/bin/python -m bench.interaction [--sequences 4] [--frames 120] [--seed 0] [--session DIR]

The session folder is kept (``--session``, default a fresh temporary one); a second run on the
same folder skips the stages whose outputs are current. Takes ~20-40 min on 2 cores (the studio's
renders are half of it).

Last line: ``interaction mpjpe_mm=<> contact_mpjpe_mm=<> failed=<> contact_truth=<> contact_export=<>
mindist_truth_cm=<> mindist_export_cm=<> contact_precision=<> contact_recall=<> frames=<> close_frames=<>``
(issue targets: mpjpe <= 5, contact_mpjpe <= 8, failed <= 0.05, |contact_export - contact_truth| <= 0.05,
|mindist_export - mindist_truth| <= 0.3 cm, contact precision and recall >= 0.85).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipeline.demo import CAPTURE_STAGES, DemoConfig, print_table, run_stages
from pipeline.log import setup_logging
from pipeline.versus_truth import interaction_figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--session", type=Path, default=None, help="session folder (kept; default: a temporary one)")
    args = ap.parse_args()
    setup_logging()
    with tempfile.TemporaryDirectory(prefix="bench-interaction-") as tmp:
        session = args.session or Path(tmp) / "interaction"
        cfg = DemoConfig(session=session, sequences=args.sequences, frames=args.frames, seed=args.seed)
        stages = [s for s in CAPTURE_STAGES if s[0] != "interaction"]
        print_table(run_stages(cfg, stages))
        figures = interaction_figures(session)
    print(f"\n{args.sequences} takes x {args.frames} frames, demo dome, seed {args.seed}; "
          f"{figures.close_frames} of {figures.frames} frames with the hands under 1 cm apart")
    print(figures.line())


if __name__ == "__main__":
    main()
