"""``handdiffuse merge SESSION``: finished Label Studio annotations -> keypoints2d_manual.h5, then the
triangulate and fit stages on the frames whose manual points changed.

1. the export: pulled from the session's Label Studio, or a file saved from it (``--export``)
2. checked whole before anything is written (``annotation.merge.annotated_views``): a malformed
   export is refused with one line and nothing is merged
3. the sequences merged into are locked, then the annotation folder (the order every stage
   locks them in); the annotations not merged before (``annotation.merge.pending``)

per sequence:

4. the views' points into keypoints2d_manual.h5 (``annotation.merge.merge_views``): the frames
   whose manual points changed
5. the triangulate stage, then the fit stage, on those frames (``--frames``; the fit with
   ``--context-frames`` neighbours, the shape kept, the hand model mano.h5 names). Each stage
   decides itself whether the rest of its output is current (joints3d.h5 made with
   ``--triangulate.*``, mano.h5 with ``--options.*`` / ``--rule.*``): then only those frames are
   redone and spliced in, and the output is current (``handdiffuse triangulate`` / ``fit`` with
   those options keep the splice); else the whole sequence. Before and after: how far the fit
   lies from the manual points (px), and how many of the frames it flags
6. the merge recorded (annotation/merged.jsonl); per sequence, so a failure in the next one keeps
   this one's record
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from annotation.merge import annotated_views, merge_views, pending, pull_export, read_export, record_merges
from annotation.records import MERGED
from data_schemas.errors import EXIT_OK, SchemaError
from data_schemas.keypoints2d import read_keypoints2d
from data_schemas.lock import writing, writing_all
from data_schemas.mano import read_mano
from data_schemas.session import KEYPOINTS2D_MANUAL, MANO, SEQUENCE_DIR, Session
from fitting.fit import FitOptions
from fitting.fit_stage import FitConfig, fit_session
from fitting.quality import QualityRule
from fitting.triangulate_stage import TriangulateConfig, TriangulateOptions, triangulate_session


@dataclass
class MergeConfig:
    """Merge finished Label Studio annotations into keypoints2d_manual.h5, then triangulate and fit
    their frames again."""

    export: Path | None = None
    """A Label Studio JSON export (a file) to merge instead of pulling one from the session's server."""
    context_frames: int = 3
    """Frames either side of an annotated frame fitted with it (temporal terms); only the annotated
    frames are replaced."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl, for fits made with --hand-model mano."""
    triangulate: TriangulateOptions = field(default_factory=TriangulateOptions)
    """The triangulate stage's options (as `handdiffuse triangulate` was run)."""
    options: FitOptions = field(default_factory=FitOptions)
    rule: QualityRule = field(default_factory=QualityRule)


@dataclass
class RefitSummary:
    sequence: str
    frames: list[int]  # the annotated frames fitted again
    window_frames: int  # frames fitted, context included
    manual_px_before: float  # mean distance of the manual points to the fit's projection, px
    manual_px_after: float
    failed_before: int  # of those frames, how many had a hand flagged
    failed_after: int


@dataclass
class MergeSummary:
    views: int  # annotated views merged now
    points: int  # manual points among them
    untouched: int  # points left as pre-annotated (not manual)
    skipped: int  # annotations merged before, unchanged
    refits: list[RefitSummary] = field(default_factory=list)
    seconds: float = 0.0


def fit_to_manual(session: Session, seq: str, frames: list[int]) -> tuple[float, int]:
    """(mean px distance of the manual points at ``frames`` to mano.h5's fitted joints projected,
    how many of those frames have a hand flagged)."""
    mano_path, manual_path = session.path(MANO, seq=seq), session.path(KEYPOINTS2D_MANUAL, seq=seq)
    if not mano_path.is_file():
        raise SchemaError(mano_path, "file not found: run `handdiffuse fit` first")
    fit, manual = read_mano(mano_path), read_keypoints2d(manual_path)
    if not np.array_equal(fit.frames, manual.frames):
        raise SchemaError(mano_path, "frames differ from keypoints2d.h5's: run `handdiffuse fit` again")
    row = {int(f): i for i, f in enumerate(fit.frames)}
    rows = np.array([row[f] for f in frames])
    rig = session.load_calibration().subset(manual.cameras, manual_path)
    d = []
    for c, cam in enumerate(rig.cameras):
        m = manual.keypoints[c, rows]  # (K, 42, 3)
        placed = m[..., 2] > 0
        if placed.any():
            d.append(np.linalg.norm(cam.project(fit.joints[rows])[placed] - m[..., :2][placed], axis=-1))
    px = float(np.concatenate(d).mean()) if d else float("nan")
    return px, int((fit.quality.failure[rows] != 0).any(1).sum())


def merge_export(root: str | Path, export: object, source: str, cfg: MergeConfig | None = None,
                 users: dict[int, str] | None = None) -> MergeSummary:
    """Steps 2 to 6 for an export already in hand."""
    t0 = time.perf_counter()
    cfg = cfg or MergeConfig()
    session = Session.open(root)
    # 2.
    views = annotated_views(session, export, source, users)
    # 3. the sequences merged into, then the annotation folder: the order every stage locks them in
    places = [session.path(SEQUENCE_DIR, seq=s) for s in sorted({v.record.sequence for v in views})]
    with writing_all(places, "merge"), writing((session.root / MERGED).parent, "merge"):
        todo = pending(session, views)
        summary = MergeSummary(len(todo), sum(len(v.points) for v in todo), sum(v.untouched for v in todo),
                               len(views) - len(todo))
        for seq in sorted({v.record.sequence for v in todo}):
            mine = [v for v in todo if v.record.sequence == seq]
            # 4.
            frames = merge_views(session, seq, mine)
            # 5.
            if frames:
                summary.refits.append(refit(session, seq, frames, cfg))
            # 6.
            record_merges(session, mine)
    summary.seconds = time.perf_counter() - t0
    return summary


def refit(session: Session, seq: str, frames: list[int], cfg: MergeConfig) -> RefitSummary:
    """Step 5: the triangulate and fit stages on ``frames`` of ``seq``."""
    before, failed_before = fit_to_manual(session, seq, frames)
    fitted_with = read_mano(session.path(MANO, seq=seq)).hand_model
    triangulate_session(session.root, TriangulateConfig(**dataclasses.asdict(cfg.triangulate), sequences=[seq],
                                                         frames=frames))
    [fit] = fit_session(session.root, FitConfig(
        sequences=[seq], frames=frames, context_frames=cfg.context_frames, mano_dir=cfg.mano_dir,
        hand_model="mano" if fitted_with == "mano" else "open_hand", options=cfg.options, rule=cfg.rule))
    after, failed_after = fit_to_manual(session, seq, frames)
    return RefitSummary(seq, frames, fit.fitted, before, after, failed_before, failed_after)


def merge_session(root: str | Path, cfg: MergeConfig | None = None) -> MergeSummary:
    """``handdiffuse merge``: pull the export (or read ``cfg.export``), then ``merge_export``."""
    cfg = cfg or MergeConfig()
    root = Path(root)
    Session.open(root)
    if cfg.export is not None:
        return merge_export(root, read_export(cfg.export), str(cfg.export), cfg)
    export, source, users = pull_export(root)
    return merge_export(root, export, source, cfg, users)


@dataclass
class MergeCommand(MergeConfig):
    """Pull the finished annotations from the session's Label Studio, merge them into
    sequences/<seq>/keypoints2d_manual.h5, and run the triangulate and fit stages on their frames."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        s = merge_session(self.session, self)
        print(f"merged {s.views} annotated views: {s.points} points placed or moved, {s.untouched} left as "
              f"pre-annotated; {s.skipped} merged before and unchanged; {s.seconds:.1f} s")
        for r in s.refits:
            print(f"  refit {r.sequence}: {len(r.frames)} frames ({r.window_frames} with context); manual points "
                  f"to the fit {_px(r.manual_px_before)} -> {_px(r.manual_px_after)} px; frames flagged "
                  f"{r.failed_before} -> {r.failed_after}")
        return EXIT_OK


def _px(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1f}"
