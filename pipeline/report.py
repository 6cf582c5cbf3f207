"""``handdiffuse report SESSION``: one static page of what every stage made -> ``report/index.html``.

The page opens offline: plain HTML with a small CSS block, no script, every image a file
beside it, referenced by a relative path::

    report/
      index.html                  the page, written last (its presence means the set is complete)
      calibration_rig.png         camera centres and viewing axes, top and side views
      calibration_errors_px.png   mean reprojection error per camera (calibration.toml metadata)
      calibrate_<name>.png        the figures the calibrate stage wrote beside calibration.toml
      detect_<seq>.png            each sequence's overlays/detect.png
      detection_rate.png          share of (frame, hand) views with a detection, per camera
      motion_<seq>.png            filmstrip: triangulated skeleton (top row), fitted mesh (bottom row)
      fit_quality.png             histograms of reprojection error, 3D residual, penetration
      fit_<seq>.png               the same over time, and the failure reasons of every frame
      queue.png                   queued views per reason and per sequence
      stats_<name>.png            the stats stage's figures
      run_<run>_<name>.png        a generator run's sample images (``runs`` given)

Sections, in pipeline order, each present only when its inputs exist and otherwise one line
naming the make target that makes them: 1. calibration, 2. detection, 3. 3D motion, 4. fit
quality, 5. annotation queue, 6. dataset, 7. generated samples. Hands are drawn as the detection
overlays draw them: left blue, right orange. The motion filmstrips look through the first
calibrated camera (the world frame itself when there is no calibration); they cover at most
``max_sequences`` sequences, ``max_frames`` frames each, ``filmstrip_frames`` of those drawn.
"""

from __future__ import annotations

import html
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from data_schemas.atomic import atomic_path, atomic_write_text
from data_schemas.calibration import read_calibration
from data_schemas.checks import load_json
from data_schemas.errors import EXIT_BAD_INPUT, EXIT_OK, SchemaError
from data_schemas.joints3d import read_joints3d
from data_schemas.keypoints import HANDS, N_HAND_JOINTS
from data_schemas.keypoints2d import read_keypoints2d
from data_schemas.lock import writing
from data_schemas.mano import REASON_NAMES, FailureReason, ManoFit, read_mano
from data_schemas.manifest import MANIFEST_NAME, read_manifest
from data_schemas.queue import read_queue
from data_schemas.session import (CALIBRATION_TOML, JOINTS3D, KEYPOINTS2D, MANO, QUEUE, REPORT, SEQUENCE_DIR,
                                  SESSION_TOML, STATS, Session)
from hand_model.draw import HAND_COLORS, Viewpoint, draw_mesh, draw_skeleton

NEUTRAL = "#5a5a5a"  # bars that are about no hand in particular
INDEX = "index.html"
RUNS_NOTE = "no generator runs yet"


@dataclass
class ReportOptions:
    max_sequences: int = 3
    """Sequences drawn in the motion filmstrips and the per-sequence fit plots."""
    max_frames: int = 60
    """Frames of each of those sequences covered by its filmstrip (from the first)."""
    filmstrip_frames: int = 8
    """Instants drawn in each filmstrip, spread over those frames."""
    runs: Path | None = None
    """A generator's runs/ folder (runs/<name>/metrics.json, samples/*.png): shown under
    'generated samples'. Default: none."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl, to draw fits made with MANO
    (default $HANDDIFFUSE_MANO_DIR); fits made with the bundled hand model need nothing."""

    def validate(self, source: str | Path) -> None:
        for k in ("max_sequences", "max_frames", "filmstrip_frames"):
            if getattr(self, k) < 1:
                raise SchemaError(source, f"{k} must be at least 1, got {getattr(self, k)}")
        if self.runs is not None and not Path(self.runs).is_dir():
            raise SchemaError(self.runs, "runs folder not found")


@dataclass
class Section:
    key: str  # the anchor in the page
    title: str
    body: str  # HTML
    present: bool  # False: its inputs are missing and the body says how to make them


@dataclass
class ReportSummary:
    path: Path  # report/index.html
    sections: dict[str, bool]  # title -> present (inputs existed)
    images: list[Path] = field(default_factory=list)
    seconds: float = 0.0


# ---- small HTML pieces ---------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 1.5em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
nav ol { columns: 2; } .meta { color: #555; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.92em; color: #444; margin-top: 0.3em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.missing { color: #8a4b00; background: #fff6e5; padding: 0.4em 0.7em; border-left: 3px solid #e0a040; }
code { background: #f2f2f2; padding: 0 0.2em; }
.scroll { overflow-x: auto; }
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _missing(stage: str, session: Path, what: str) -> str:
    return (f'<p class="missing">not run yet: <code>make {_e(stage)} SESSION={_e(session)}</code> '
            f"({_e(what)})</p>")


def _figure(src: str, caption: str) -> str:
    return (f'<figure><img src="{_e(src)}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _num(x: float | None, fmt: str = ".2f", scale: float = 1.0, unit: str = "") -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{scale * x:{fmt}}{unit}"


# ---- image files ---------------------------------------------------------------------------

class _Images:
    """The images of one report: each written atomically into ``out``, remembered in order."""

    def __init__(self, out: Path):
        self.out = out
        self.written: list[Path] = []

    def save(self, fig, name: str, dpi: int = 90) -> str:
        with atomic_path(self.out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
        self.written.append(self.out / name)
        return name

    def copy(self, src: Path, name: str) -> str:
        with atomic_path(self.out / name) as tmp:
            tmp.write_bytes(src.read_bytes())
        self.written.append(self.out / name)
        return name


def _figure_grid(rows: int, cols: int, width: float, height: float):
    from matplotlib.figure import Figure  # the Agg canvas: no display needed

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _sequence_colors(n: int) -> list:
    from matplotlib import colormaps

    return [colormaps["viridis"](x) for x in np.linspace(0.15, 0.85, n)] if n > 1 else [NEUTRAL]


def _hand_valid(fit: ManoFit) -> np.ndarray:
    """(F, 2) bool: the fit of this hand in this frame was accepted."""
    return fit.quality.failure == 0


# ---- 1. calibration --------------------------------------------------------------------------

def _calibration(s: Session, img: _Images) -> Section:
    title = "Calibration"
    path = s.root / CALIBRATION_TOML
    if not path.is_file():
        return Section("calibration", title, _missing("calibrate", s.root, f"no {CALIBRATION_TOML}"), False)
    rig = read_calibration(path)
    centers = np.stack([c.center for c in rig.cameras])  # (C, 3) m
    axes = np.stack([c.R.T[:, 2] for c in rig.cameras])  # (C, 3) viewing direction in the world
    radius = float(np.median(np.linalg.norm(centers - centers.mean(0), axis=1))) or 1.0
    fig, ax = _figure_grid(1, 2, 11, 5)
    for a, (i, j, name) in zip(ax[0], ((0, 1, "top view (x, y)"), (0, 2, "side view (x, z)"))):
        a.scatter(centers[:, i], centers[:, j], c="k", s=14)
        a.quiver(centers[:, i], centers[:, j], axes[:, i], axes[:, j], angles="xy", scale_units="xy",
                 scale=1 / (0.3 * radius), color="tab:red", width=0.004)
        for n, c in zip(rig.names, centers):
            a.annotate(n, (c[i], c[j]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        a.scatter([0], [0], marker="s", c="tab:green", s=30, label="world origin")
        a.set_aspect("equal", adjustable="datalim")
        a.set_xlabel(f"{'xyz'[i]} (m)")
        a.set_ylabel(f"{'xyz'[j]} (m)")
        a.set_title(name)
    ax[0][0].legend(fontsize=8)
    body = [_figure(img.save(fig, "calibration_rig.png"),
                    f"{len(rig)} cameras, centres (black) and viewing axes (red); median distance from the "
                    f"rig centre {radius:.2f} m")]
    md = rig.metadata
    errors = md.get("reprojection_error_px") or {}
    if errors:
        names = [n for n in rig.names if n in errors]
        vals = np.array([errors[n] for n in names], dtype=float)
        fig, ax = _figure_grid(1, 1, max(6.0, 0.25 * len(names) + 2), 3.2)
        ax[0][0].bar(range(len(names)), vals, color=NEUTRAL)
        ax[0][0].set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax[0][0].set_ylabel("mean reprojection error (px)")
        worst = names[int(np.argmax(vals))]
        body.append(_figure(img.save(fig, "calibration_errors_px.png"),
                            f"reprojection error per camera: mean {vals.mean():.3f} px, worst {worst} "
                            f"{vals.max():.3f} px"))
    facts = [["cameras", len(rig)]]
    for k, label in (("error", "mean reprojection error (px)"), ("error_median", "median reprojection error (px)"),
                     ("outliers_dropped", "outlier observations dropped"), ("method", "method"), ("date", "date")):
        if k in md:
            facts.append([label, f"{md[k]:.3f}" if isinstance(md[k], float) else md[k]])
    body.insert(0, _table(["calibration", ""], facts))
    for png in sorted(path.parent.glob("*.png")):
        body.append(_figure(img.copy(png, f"calibrate_{png.name}"), f"from the calibrate stage: {png.name}"))
    return Section("calibration", title, "\n".join(body), True)


# ---- 2. detection ----------------------------------------------------------------------------

def _detection(s: Session, img: _Images) -> Section:
    title = "2D detection"
    seqs = [q for q in s.sequences if s.path(KEYPOINTS2D, seq=q).is_file()]
    if not seqs:
        return Section("detection", title, _missing("detect", s.root, "no sequences/<seq>/keypoints2d.h5"), False)
    rates: dict[str, dict[str, float]] = {}  # seq -> camera -> share of (frame, hand) views detected
    for q in seqs:
        kp = read_keypoints2d(s.path(KEYPOINTS2D, seq=q))
        found = kp.found.reshape(len(kp.cameras), len(kp.frames), 2, N_HAND_JOINTS).any(-1)  # (C, F, 2)
        rates[q] = dict(zip(kp.cameras, found.mean(axis=(1, 2)).tolist()))
    cams = list(dict.fromkeys(c for r in rates.values() for c in r))
    fig, ax = _figure_grid(1, 1, max(6.0, 0.3 * len(cams) * min(len(seqs), 4) + 2), 3.5)
    a, width = ax[0][0], 0.8 / len(seqs)
    shades = _sequence_colors(len(seqs))  # not blue or orange: those mean left and right hand
    for k, q in enumerate(seqs):
        a.bar(np.arange(len(cams)) + k * width, [100 * rates[q].get(c, np.nan) for c in cams], width, label=q,
              color=shades[k])
    a.set_xticks(np.arange(len(cams)) + 0.4 - width / 2, cams, rotation=90, fontsize=7)
    a.set_ylabel("views with the hand detected (%)")
    a.set_ylim(0, 105)
    if len(seqs) <= 12:
        a.legend(fontsize=7, ncols=min(len(seqs), 6))
    overall = np.mean([v for r in rates.values() for v in r.values()])
    per_cam = {c: np.nanmean([rates[q].get(c, np.nan) for q in seqs]) for c in cams}
    low = min(per_cam, key=per_cam.get)
    body = [_figure(img.save(fig, "detection_rate.png"),
                    f"detection rate per camera over {len(seqs)} sequences (a hand counts as detected in a view "
                    f"when any of its 21 points is): {100 * overall:.1f}% overall, lowest {low} "
                    f"{100 * per_cam[low]:.1f}%")]
    for q in seqs:
        overlay = s.path(SEQUENCE_DIR, seq=q) / "overlays" / "detect.png"
        if overlay.is_file():
            body.append(_figure(img.copy(overlay, f"detect_{q}.png"),
                                f"{q}: detections on frames (rows: cameras, columns: instants), left blue, right "
                                f"orange; {100 * np.mean(list(rates[q].values())):.1f}% of views detected"))
        else:
            body.append(f"<p>{_e(q)}: no overlay (<code>make detect SESSION={_e(s.root)} ARGS=--overlay</code> "
                        "draws one)</p>")
    return Section("detection", title, "\n".join(body), True)


# ---- 3. motion filmstrips --------------------------------------------------------------------

def _motion(s: Session, img: _Images, opts: ReportOptions) -> Section:
    title = "3D motion"
    seqs = [q for q in s.sequences if s.path(JOINTS3D, seq=q).is_file() or s.path(MANO, seq=q).is_file()]
    if not seqs:
        return Section("motion", title, _missing("triangulate", s.root, "no sequences/<seq>/joints3d.h5"), False)
    rig = read_calibration(s.root / CALIBRATION_TOML) if (s.root / CALIBRATION_TOML).is_file() else None
    view = Viewpoint(rig)
    body = [f"<p>The first {min(len(seqs), opts.max_sequences)} of {len(seqs)} sequences, {view.name}; left hand "
            "blue, right orange. Top row: triangulated joints; bottom row: the fitted hand model.</p>"]
    model, model_note = None, ""
    for q in seqs[: opts.max_sequences]:
        j3d = read_joints3d(s.path(JOINTS3D, seq=q)) if s.path(JOINTS3D, seq=q).is_file() else None
        fit = read_mano(s.path(MANO, seq=q)) if s.path(MANO, seq=q).is_file() else None
        frames = (j3d if j3d is not None else fit).frames[: opts.max_frames]
        if not len(frames):
            continue
        picks = np.unique(np.linspace(0, len(frames) - 1, min(opts.filmstrip_frames, len(frames))).round().astype(int))
        shown = frames[picks]  # (K,) frame indices
        rows: list[tuple[str, list]] = []
        if j3d is not None:
            at = {int(f): i for i, f in enumerate(j3d.frames)}
            rows.append(("joints", [j3d.joints[at[int(f)]] if int(f) in at else None for f in shown]))
        if fit is not None:
            if model is None and not model_note:
                try:
                    from hand_model.posing import hand_model_for

                    model = hand_model_for(fit.hand_model, opts.mano_dir, s.path(MANO, seq=q))
                except SchemaError as e:
                    model_note = f"meshes not drawn: {e}"
            if model is not None:
                from hand_model.posing import pose_hands

                at = {int(f): i for i, f in enumerate(fit.frames)}
                idx = np.array([at.get(int(f), -1) for f in shown])
                sel = np.where(idx >= 0, idx, 0)
                posed = pose_hands(model, fit.global_orient[sel], fit.hand_pose[sel], fit.betas, fit.transl[sel],
                                   fit.flat_hand_mean)  # vertices (K, 2, V, 3)
                failed = fit.quality.failure[sel]  # (K, 2)
                rows.append(("mesh", [(posed.vertices[k], failed[k]) if idx[k] >= 0 else None
                                      for k in range(len(shown))]))
        if not rows:
            continue
        fig, ax = _figure_grid(len(rows), len(shown), 1.7 * len(shown), 1.9 * len(rows))
        pts = []  # every drawn point's 2D position, for one set of limits per strip
        for r, (kind, items) in enumerate(rows):
            for k, item in enumerate(items):
                a = ax[r][k]
                a.set_xticks([])
                a.set_yticks([])
                label = f"frame {int(shown[k])}"
                if item is None:
                    a.set_title(f"{label}: none", fontsize=7)
                    continue
                if kind == "joints":
                    draw_skeleton(a, item, view)
                    pts.append(view.project(item)[0])
                else:
                    verts, fail = item
                    draw_mesh(a, verts, model.faces, view)
                    pts.append(view.project(verts.reshape(-1, 3))[0])
                    bad = [HANDS[h][0].upper() for h in range(2) if fail[h]]
                    if bad:
                        label += f" (fit failed: {'+'.join(bad)})"
                a.set_title(label, fontsize=7)
        xy = np.concatenate([p.reshape(-1, 2) for p in pts]) if pts else np.zeros((0, 2))
        xy = xy[np.isfinite(xy).all(-1)]
        if len(xy):
            lo, hi = xy.min(0), xy.max(0)
            pad = 0.08 * float((hi - lo).max() or 1.0)
            for a in ax.ravel():
                a.set_xlim(lo[0] - pad, hi[0] + pad)
                a.set_ylim(hi[1] + pad, lo[1] - pad)  # image y points down
                a.set_aspect("equal", adjustable="box")
        caption = (f"{q}: {len(shown)} of its first {len(frames)} frames ({', '.join(r[0] for r in rows)})")
        if j3d is not None:
            ok = np.isfinite(j3d.joints[: opts.max_frames]).all(-1).mean()
            caption += f"; {100 * ok:.1f}% of joints triangulated in those frames"
        body.append(_figure(img.save(fig, f"motion_{q}.png", dpi=80), caption))
    if model_note:
        body.append(f"<p>{_e(model_note)}</p>")
    return Section("motion", title, "\n".join(body), True)


# ---- 4. fit quality --------------------------------------------------------------------------

def _fit_quality(s: Session, img: _Images, opts: ReportOptions) -> Section:
    title = "Fit quality"
    seqs = [q for q in s.sequences if s.path(MANO, seq=q).is_file()]
    if not seqs:
        return Section("fit", title, _missing("fit", s.root, "no sequences/<seq>/mano.h5"), False)
    fits = {q: read_mano(s.path(MANO, seq=q)) for q in seqs}
    metrics = (("reproj_mean_px", "reprojection error (px)", 1.0), ("residual3d", "3D residual (mm)", 1000.0),
               ("penetration", "penetration depth (mm)", 1000.0))
    fig, ax = _figure_grid(1, 3, 13, 3.4)
    medians = {}
    for a, (k, label, scale) in zip(ax[0], metrics):
        for h in range(2):
            v = np.concatenate([getattr(f.quality, k)[:, h] for f in fits.values()]) * scale
            v = v[np.isfinite(v)]
            if len(v):
                a.hist(v, bins=30, color=HAND_COLORS[h], alpha=0.6, label=HANDS[h])
        allv = np.concatenate([getattr(f.quality, k).ravel() for f in fits.values()]) * scale
        medians[k] = float(np.nanmedian(allv)) if np.isfinite(allv).any() else None
        a.set_xlabel(label)
        a.set_ylabel("(frame, hand)")
        a.legend(fontsize=8)
    frames = sum(len(f.frames) for f in fits.values())
    failed = sum(int(f.quality.failed.any(1).sum()) for f in fits.values())
    body = [_figure(img.save(fig, "fit_quality.png"),
                    f"{len(seqs)} sequences, {frames} frames, {failed} with a failed hand "
                    f"({100 * failed / max(frames, 1):.1f}%); medians: reprojection "
                    f"{_num(medians['reproj_mean_px'])} px, 3D residual {_num(medians['residual3d'], '.1f')} mm, "
                    f"penetration {_num(medians['penetration'], '.1f')} mm")]
    rows = []
    for q, f in fits.items():
        counts = [int(((f.quality.failure & r.value) != 0).any(1).sum()) for r in FailureReason]
        rows.append([q, len(f.frames), int(f.quality.failed.any(1).sum()),
                     f"{100 * _hand_valid(f).mean():.1f}%"] + counts)
    body.append(_table(["sequence", "frames", "failed frames", "hands accepted"] + list(REASON_NAMES), rows))
    for q in seqs[: opts.max_sequences]:
        f = fits[q]
        fig, ax = _figure_grid(3, 1, 11, 6.5)
        for r, (k, label, scale) in enumerate(metrics[:2]):
            for h in range(2):
                ax[r][0].plot(f.frames, getattr(f.quality, k)[:, h] * scale, color=HAND_COLORS[h], label=HANDS[h])
            ax[r][0].set_ylabel(label, fontsize=8)
        ax[0][0].legend(fontsize=8)
        a = ax[2][0]
        for h in range(2):
            for i, reason in enumerate(FailureReason):
                hit = (f.quality.failure[:, h] & reason.value) != 0
                a.scatter(f.frames[hit], np.full(int(hit.sum()), i + (0.15 if h else -0.15)), color=HAND_COLORS[h],
                          marker="|", s=40)
        a.set_yticks(range(len(REASON_NAMES)), REASON_NAMES, fontsize=7)
        a.set_ylim(-0.6, len(REASON_NAMES) - 0.4)
        a.set_xlabel("frame")
        for r in range(3):
            ax[r][0].set_xlim(f.frames.min() - 0.5, f.frames.max() + 0.5)
        reasons = Counter(n for flags in f.quality.failure.ravel() for n in FailureReason.names_of(int(flags)))
        top = ", ".join(f"{n} {c}" for n, c in reasons.most_common(3)) or "none"
        body.append(_figure(img.save(fig, f"fit_{q}.png"),
                            f"{q}: reprojection error and 3D residual per frame, and the failure reasons of each "
                            f"frame (left blue, right orange); most frequent: {top}"))
    return Section("fit", title, "\n".join(body), True)


# ---- 5. annotation queue ---------------------------------------------------------------------

def _queue(s: Session, img: _Images) -> Section:
    title = "Annotation queue"
    path = s.root / QUEUE
    if not path.is_file():
        return Section("queue", title, _missing("queue", s.root, f"no {QUEUE}"), False)
    items = read_queue(path)
    by_reason = Counter(r for i in items for r in i.reason.split("+"))
    by_seq = Counter(i.sequence for i in items)
    frames = {(i.sequence, i.frame) for i in items}
    body = [f"<p>{len(items)} views of {len(frames)} frames queued for manual 2D annotation "
            f"({len(by_seq)} sequences).</p>"]
    if items:
        fig, ax = _figure_grid(1, 2, 11, 3.4)
        names = [n for n in REASON_NAMES if by_reason[n]]
        ax[0][0].bar(range(len(names)), [by_reason[n] for n in names], color=NEUTRAL)
        ax[0][0].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax[0][0].set_ylabel("views (one view may have several reasons)")
        seqs = sorted(by_seq)
        ax[0][1].bar(range(len(seqs)), [by_seq[q] for q in seqs], color=_sequence_colors(len(seqs)))
        ax[0][1].set_xticks(range(len(seqs)), seqs, rotation=30, ha="right", fontsize=8)
        ax[0][1].set_ylabel("views")
        top = ", ".join(f"{n} {c}" for n, c in by_reason.most_common(3))
        body.append(_figure(img.save(fig, "queue.png"), f"queued views by reason ({top}) and by sequence"))
        body.append(_table(["sequence", "views", "frames"],
                           [[q, by_seq[q], len({f for sq, f in frames if sq == q})] for q in seqs]))
    from annotation.records import MERGED, read_merge_records

    merged = read_merge_records(s.root / MERGED)
    if merged:
        people = Counter(r.annotator for r in merged)
        body.append(f"<p>Merged back: {len(merged)} annotated views, {sum(r.points for r in merged)} points placed "
                    f"or moved, by {len(people)} annotator(s) ({', '.join(f'{_e(a)} {n}' for a, n in people.items())}"
                    f"); last merge {_e(max(r.merged_at for r in merged))}.</p>")
    else:
        body.append(f"<p>No annotations merged yet (<code>make annotate SESSION={_e(s.root)}</code>, then "
                    f"<code>make merge SESSION={_e(s.root)}</code>).</p>")
    return Section("queue", title, "\n".join(body), True)


# ---- 6. dataset ------------------------------------------------------------------------------

def _dataset(s: Session, img: _Images) -> Section:
    title = "Dataset"
    export = s.root / "export"
    if not (export / MANIFEST_NAME).is_file():
        return Section("dataset", title, _missing("export", s.root, f"no export/{MANIFEST_NAME}"), False)
    df = read_manifest(export)
    body = [f"<p>{len(df)} sequences, {int(df['frames'].sum())} frames in "
            f"{df['shard'].nunique()} shard(s); splits: "
            + ", ".join(f"{_e(k)} {v}" for k, v in df["split"].value_counts().items()) + ".</p>"]
    cols = ["name", "frames", "category", "split", "valid_fraction", "mean_fit_error_mm", "manual_frames"]
    rows = [[r["name"], r["frames"], r["category"] or "-", r["split"], f"{100 * r['valid_fraction']:.1f}%",
             _num(r["mean_fit_error_mm"], ".1f"), r["manual_frames"]] for _, r in df.head(50).iterrows()]
    body.append(_table(cols, rows) + (f"<p>... and {len(df) - 50} more</p>" if len(df) > 50 else ""))
    stats_json = s.root / STATS
    if not stats_json.is_file():
        body.append(_missing("stats", s.root, "no export/stats/stats.json"))
        return Section("dataset", title, "\n".join(body), True)
    st = load_json(stats_json)
    paper = st.get("paper", {})
    facts = [["sequences", st.get("sequences")], ["frames", st.get("frames")],
             ["frames with both hands valid", st.get("frames_both_hands_valid")],
             ["mean shortest joint distance", _num(st.get("mean_shortest_joint_distance_cm"), unit=" cm")
              + f" (paper {_num(paper.get('mean_shortest_joint_distance_cm'), unit=' cm')})"],
             ["contacting frames", _num(st.get("contact_ratio"), ".1f", 100, "%")
              + f" (paper {_num(paper.get('contact_ratio'), '.1f', 100, '%')})"]]
    body.append(_table(["statistic", "value"], facts))
    for png in sorted(stats_json.parent.glob("*.png")):
        body.append(_figure(img.copy(png, f"stats_{png.name}"), f"from the stats stage: {png.name}"))
    return Section("dataset", title, "\n".join(body), True)


# ---- 7. generated samples (hook) -------------------------------------------------------------

def _samples(s: Session, img: _Images, opts: ReportOptions) -> Section:
    title = "Generated samples"
    if opts.runs is None:
        return Section("samples", title, f"<p>{RUNS_NOTE} (pass <code>--runs runs/</code> once a generator has "
                                         "been trained).</p>", False)
    runs = sorted(p for p in Path(opts.runs).iterdir() if (p / "model.pt").is_file())  # trained runs
    if not runs:
        return Section("samples", title, f"<p>{RUNS_NOTE} in {_e(opts.runs)}.</p>", False)
    body = []
    for run in runs:
        body.append(f"<h3>{_e(run.name)}</h3>")
        metrics = run / "metrics.json"
        if metrics.is_file():
            m = load_json(metrics)
            body.append(_table(["metric", "value"], [[k, v] for k, v in m.items() if not isinstance(v, (dict, list))]))
        for png in sorted((run / "samples").glob("*.png"))[:6]:
            body.append(_figure(img.copy(png, f"run_{run.name}_{png.name}"), f"{run.name}: {png.name}"))
    return Section("samples", title, "\n".join(body), True)


# ---- the page --------------------------------------------------------------------------------

def _page(s: Session, sections: list[Section]) -> str:
    c = s.config
    meta = [f"{len(c.cameras)} cameras", f"{c.fps:g} fps", f"{len(s.sequences)} sequences"]
    meta += [x for x in (c.subject, c.capture_date) if x]
    toc = "".join(f'<li><a href="#{x.key}">{_e(x.title)}</a>{"" if x.present else " (not run yet)"}</li>'
                  for x in sections)
    parts = "\n".join(f'<section id="{x.key}"><h2>{_e(x.title)}</h2>\n{x.body}\n</section>' for x in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<title>Session {_e(c.name)}</title>\n'
            f"<style>{CSS}</style></head>\n<body>\n<h1>Session {_e(c.name)}</h1>\n"
            f'<p class="meta">{_e(", ".join(meta))}; folder {_e(s.root)}; report written '
            f'{_e(time.strftime("%Y-%m-%d %H:%M"))}</p>\n<nav><h2>Contents</h2><ol>{toc}</ol></nav>\n{parts}\n'
            "</body></html>\n")


def write_report(session: Path, out: Path | None = None, opts: ReportOptions | None = None) -> ReportSummary:
    """Write ``out``/index.html (default ``session``/report/) and its images; nothing is written when
    ``session`` is not a session folder (SchemaError)."""
    t0 = time.perf_counter()
    session = Path(session)
    opts = opts or ReportOptions()
    if not (session / SESSION_TOML).is_file():
        raise SchemaError(session, f"not a session folder (no {SESSION_TOML})")
    s = Session.open(session)
    opts.validate("report options")
    out = Path(out) if out is not None else (session / REPORT).parent
    with writing(out, "report"):
        img = _Images(out)
        sections = [_calibration(s, img), _detection(s, img), _motion(s, img, opts), _fit_quality(s, img, opts),
                    _queue(s, img), _dataset(s, img), _samples(s, img, opts)]
        index = out / INDEX
        atomic_write_text(index, _page(s, sections))
    return ReportSummary(index, {x.title: x.present for x in sections}, img.written, time.perf_counter() - t0)


# ---- the command -----------------------------------------------------------------------------

@dataclass
class ReportCommand(ReportOptions):
    """Write the session report: calibration, detections, 3D motion, fit quality, annotation queue,
    dataset statistics -> SESSION/report/index.html (static; opens offline)."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""
    out: Path | None = None
    """Folder for index.html and its images (default: SESSION/report)."""

    def run(self) -> int:
        from pipeline.log import LOG

        try:
            r = write_report(self.session, self.out, self)
        except SchemaError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        done = [t for t, present in r.sections.items() if present]
        todo = [t for t, present in r.sections.items() if not present]
        print(f"report {r.path}: {len(done)} of {len(r.sections)} sections ({', '.join(done) or 'none'}), "
              f"{len(r.images)} images, {r.seconds:.1f} s" + (f"; not run yet: {', '.join(todo)}" if todo else ""))
        print(f"open it: xdg-open {r.path}   (or file://{r.path.resolve()} in a browser)")
        LOG.info("report: done in %.1f s", r.seconds)
        return EXIT_OK
