"""``handdiffuse stats PATH``: statistics of an exported dataset -> ``<export>/stats/``.

Reads the export folder (``manifest.parquet`` + shards, ``data_schemas.dataset``) and writes::

    stats/
      stats.json                  every number below (format handdiffuse.stats, version 2)
      shortest_joint_distance.png histogram of the per-frame shortest joint distance
      frames_per_sequence.png     histogram of sequence lengths
      categories.png              sequences and frames per category
      splits.png                  sequences and frames per split
      fit_quality.png             fit error, valid fraction, manual share and frame confidence
      tsne.png                    t-SNE of the hand poses, coloured by category

The two numbers the HandDiffuse paper reports for its dataset, over the frames where both
hands are valid (fitted and accepted):

1. mean shortest distance between the hands' joints (paper: 3.61 cm): per frame, the
   smallest of the 21 x 21 left-right joint distances (the shard's ``joints``); their mean;
2. contacting-frame ratio (paper: 57.3%): the share of those frames whose posed meshes
   (the shard's MANO parameters through the hand model its ``hand_model`` names) have a
   vertex pair less than 3 mm apart, or interpenetrate (``hand_model.contact_frames``).

And, to see what the dataset holds: 3. frames per sequence; 4. sequences and frames per
category and per split (the manifest's columns); 5. fit quality: the fit error of every
valid (frame, hand), each sequence's valid fraction and share of frames with manual 2D
annotation, and the confidence of every frame (the lower of its two hands': 0 where a hand is
not valid) with the share of frames a generator trains on (at least ``MIN_CONFIDENCE``); 6. a
t-SNE (scikit-learn) of up to ``tsne_frames`` frames' hand poses (both hands, 90 numbers, relative
to the flat hand), drawn with a fixed seed.

Every file is written atomically, stats.json last: its presence means the set is complete.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from data_schemas.atomic import atomic_path, atomic_write_text
from data_schemas.dataset import MIN_CONFIDENCE
from data_schemas.errors import EXIT_BAD_INPUT, EXIT_OK, SchemaError
from data_schemas.lock import writing
from data_schemas.manifest import MANIFEST_NAME, read_manifest, shard_path as shard_file
from data_schemas.shard import ShardReader
from hand_model.contact_frames import THRESHOLD, contact_frames, shortest_joint_distance
from hand_model.posing import flat_hand_pose, hand_model_for

FORMAT = "handdiffuse.stats"
VERSION = 2
STATS_DIR = "stats"
STATS_JSON = "stats.json"
PLOTS = ("shortest_joint_distance.png", "frames_per_sequence.png", "categories.png", "splits.png",
         "fit_quality.png", "tsne.png")
NO_CATEGORY = "(none)"
BINS = 20
PAPER_MEAN_SHORTEST_CM, PAPER_CONTACT_RATIO = 3.61, 0.573  # the paper's dataset, for comparison
MIN_TSNE_FRAMES = 5  # distinct poses: t-SNE needs perplexity < points; fewer says nothing anyway


@dataclass
class StatsOptions:
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl, for sequences whose hand_model is 'mano'
    (default $HANDDIFFUSE_MANO_DIR): their meshes are posed with it for the contact ratio."""
    contact_threshold: float = THRESHOLD
    """Vertex-to-vertex distance (m) under which two hands are in contact (the paper's 3 mm)."""
    tsne_frames: int = 2000
    """Frames with both hands valid drawn for the t-SNE of poses (0: no t-SNE)."""
    seed: int = 0
    """Seed of the frames drawn for the t-SNE and of the t-SNE itself."""

    def validate(self, source: str | Path) -> None:
        if not (np.isfinite(self.contact_threshold) and self.contact_threshold > 0):
            raise SchemaError(source, f"contact_threshold must be positive (m), got {self.contact_threshold}")
        if self.tsne_frames < 0:
            raise SchemaError(source, f"tsne_frames must be >= 0, got {self.tsne_frames}")


# ---- the numbers of one sequence -----------------------------------------------------------

@dataclass
class _SequenceStats:
    name: str
    frames: int
    category: str
    split: str
    source: str
    hand_model: str
    both_valid: int
    shortest: np.ndarray  # (both_valid,) m
    contact: int
    penetrating: int
    candidates: int
    valid_fraction: float
    manual_frames: int
    fit_error_mm: np.ndarray  # (n,) over valid (frame, hand) with a known error
    confidence: np.ndarray  # (frames,) the lower of the two hands', 0 where a hand is not valid
    poses: np.ndarray  # (k, 90) drawn frames' hand poses, flat-relative
    keys: np.ndarray  # (k,) their draw keys (the smallest tsne_frames keys of the dataset win)


def _draw_keys(name: str, n: int, seed: int) -> np.ndarray:
    """Uniform keys per frame, from (seed, sequence name): the t-SNE draw does not depend on the
    order sequences are read in."""
    h = int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:16], 16)
    return np.random.default_rng(h).random(n)


def _sequence_stats(seq, row, shard_path: Path, opts: StatsOptions) -> _SequenceStats:
    model = hand_model_for(seq.hand_model, opts.mano_dir, source=shard_path)
    both = seq.valid.all(axis=1)
    c = contact_frames(model, seq.global_orient, seq.hand_pose, seq.betas, seq.transl, seq.valid,
                       flat_hand_mean=seq.flat_hand_mean, threshold=opts.contact_threshold)
    err = seq.fit_error[seq.valid & np.isfinite(seq.fit_error)].astype(np.float64) * 1000
    idx = np.flatnonzero(both)
    keys = _draw_keys(seq.name, len(idx), opts.seed)
    keep = np.argsort(keys)[:opts.tsne_frames]
    poses = flat_hand_pose(model, seq.hand_pose[idx[keep]], seq.flat_hand_mean)  # (k, 2, 45)
    poses = poses.reshape(len(keep), 90)  # (k, 90)
    return _SequenceStats(
        name=seq.name, frames=seq.n_frames, category=str(row.category) or NO_CATEGORY, split=str(row.split),
        source=seq.source, hand_model=seq.hand_model, both_valid=int(both.sum()),
        shortest=shortest_joint_distance(seq.joints[both]), contact=int(c.contact.sum()),
        penetrating=int(c.penetrating.sum()), candidates=int(c.candidates.sum()),
        valid_fraction=float(seq.valid.mean()), manual_frames=int(seq.manual.any(axis=1).sum()),
        fit_error_mm=err, confidence=np.where(seq.valid, seq.confidence, 0).min(axis=1),
        poses=poses.astype(np.float32), keys=keys[keep],
    )


# ---- the dataset ---------------------------------------------------------------------------

def _histogram(values: np.ndarray, bins: int = BINS) -> dict:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(v, bins=bins)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _histogram_in(values: np.ndarray, lo: float, hi: float, bins: int = BINS) -> dict:
    """``_histogram`` over the fixed range [lo, hi] (a distribution comparable between datasets)."""
    counts, edges = np.histogram(np.asarray(values, np.float64), bins=bins, range=(lo, hi))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _summary(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"count": 0, "mean": None, "median": None, "p95": None, "min": None, "max": None,
                "histogram": _histogram(v)}
    return {"count": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "p95": float(np.percentile(v, 95)), "min": float(v.min()), "max": float(v.max()),
            "histogram": _histogram(v)}


def _counts(items: list[_SequenceStats], key: str) -> dict:
    out: dict[str, dict] = {}
    for s in items:
        d = out.setdefault(getattr(s, key), {"sequences": 0, "frames": 0})
        d["sequences"] += 1
        d["frames"] += s.frames
    return dict(sorted(out.items()))


def _tsne(poses: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """(N, 90) -> (N, 2) embedding and the perplexity used (30, or less for few poses).

    Repeated poses are embedded once and share the point: Barnes-Hut t-SNE's tree breaks on
    coincident points (out-of-range values, or a crash). Needs MIN_TSNE_FRAMES distinct poses."""
    from sklearn.manifold import TSNE

    unique, inverse = np.unique(poses.astype(np.float64), axis=0, return_inverse=True)
    perplexity = float(min(30.0, (len(unique) - 1) / 3))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
               random_state=seed).fit_transform(unique)
    return emb[inverse.reshape(-1)], perplexity


@dataclass
class PlotData:
    """The per-frame and per-sequence values the plots draw (stats.json keeps their summaries)."""

    shortest_cm: np.ndarray  # (frames with both hands valid,)
    frames: np.ndarray  # (sequences,)
    fit_error_mm: np.ndarray  # (valid (frame, hand) with a known error,)
    valid_fraction: np.ndarray  # (sequences,)
    manual_share: np.ndarray  # (sequences,)
    confidence: np.ndarray  # (frames,)
    embedding: np.ndarray  # (t-SNE frames, 2)
    labels: np.ndarray  # (t-SNE frames,) category of each


def compute_stats(root: Path, opts: StatsOptions | None = None) -> dict:
    """The statistics of the export folder ``root`` (steps 1-6 of the module docstring): what
    stats.json holds, less the names of the plots."""
    return _compute(root, opts)[0]


def _compute(root: Path, opts: StatsOptions | None) -> tuple[dict, PlotData]:
    t0 = time.perf_counter()
    opts = opts or StatsOptions()
    root = Path(root)
    opts.validate(root)
    manifest = read_manifest(root)
    if not len(manifest):
        raise SchemaError(root / MANIFEST_NAME, "lists no sequence: nothing to compute statistics of")
    from tqdm import tqdm

    items: list[_SequenceStats] = []
    bar = tqdm(total=len(manifest), desc="stats", unit="seq", disable=not sys.stderr.isatty())
    for shard, rows in manifest.groupby("shard", sort=False):
        shard_path = shard_file(root, shard)
        with ShardReader(shard_path) as reader:
            for row in rows.itertuples(index=False):
                seq = reader.read(str(row.name))
                if seq.n_frames != int(row.frames):
                    raise SchemaError(root / MANIFEST_NAME, f"sequence '{row.name}' has {seq.n_frames} frames "
                                                            f"in {shard}, the manifest says {row.frames}")
                items.append(_sequence_stats(seq, row, shard_path, opts))
                bar.update(1)
    bar.close()

    # 1. + 2.
    shortest = np.concatenate([s.shortest for s in items])
    both = sum(s.both_valid for s in items)
    contact = sum(s.contact for s in items)
    mean_m = float(shortest.mean()) if shortest.size else None
    # 5.
    frames = np.array([s.frames for s in items])
    fit_error = np.concatenate([s.fit_error_mm for s in items])
    manual_frames = sum(s.manual_frames for s in items)
    confidence = np.concatenate([s.confidence for s in items])
    trusted = int((confidence >= MIN_CONFIDENCE).sum())
    # 6.
    tsne: dict = {"frames": 0, "random_state": opts.seed}
    keys = np.concatenate([s.keys for s in items])
    poses = np.concatenate([s.poses for s in items])
    labels = np.concatenate([[s.category] * len(s.keys) for s in items]) if keys.size else np.zeros(0, str)
    keep = np.sort(np.argsort(keys, kind="stable")[:opts.tsne_frames])
    embedding = np.zeros((0, 2))
    distinct = len(np.unique(poses[keep], axis=0)) if len(keep) else 0
    if distinct >= MIN_TSNE_FRAMES:
        embedding, perplexity = _tsne(poses[keep], opts.seed)
        tsne.update(frames=int(len(keep)), distinct_poses=distinct, perplexity=perplexity)
    else:
        tsne["skipped"] = (f"t-SNE needs {MIN_TSNE_FRAMES} distinct poses of frames with both hands valid, "
                           f"{distinct} drawn" if opts.tsne_frames else "tsne_frames is 0")
    stats = {
        "format": FORMAT, "version": VERSION, "export": str(root),
        "sequences": len(items), "frames": int(frames.sum()), "frames_both_hands_valid": int(both),
        "mean_shortest_joint_distance_m": mean_m,
        "mean_shortest_joint_distance_cm": None if mean_m is None else 100 * mean_m,
        "shortest_joint_distance_cm": _summary(100 * shortest),
        "contact_threshold_m": float(opts.contact_threshold),
        "contact_frames": int(contact),
        "contact_ratio": contact / both if both else None,
        "paper": {"mean_shortest_joint_distance_cm": PAPER_MEAN_SHORTEST_CM, "contact_ratio": PAPER_CONTACT_RATIO},
        "contact_frames_interpenetrating": int(sum(s.penetrating for s in items)),
        "contact_candidates": int(sum(s.candidates for s in items)),  # left by the bounding-box prefilter
        # 3. + 4.
        "frames_per_sequence": _summary(frames),
        "categories": _counts(items, "category"),
        "splits": _counts(items, "split"),
        "sources": _counts(items, "source"),
        "hand_models": _counts(items, "hand_model"),
        # 5.
        "fit_quality": {
            "fit_error_mm": _summary(fit_error),
            "valid_fraction": _summary(np.array([s.valid_fraction for s in items])),
            "manual_share": {"manual_frames": int(manual_frames), "share": manual_frames / int(frames.sum()),
                             **_summary(np.array([s.manual_frames / s.frames for s in items]))},
            "confidence": {"min_confidence": MIN_CONFIDENCE, "frames_at_least": trusted,
                           "share_at_least": trusted / int(frames.sum()), **_summary(confidence),
                           "histogram": _histogram_in(confidence, 0.0, 1.0)},
        },
        "tsne": tsne,
        "seconds": time.perf_counter() - t0,
    }
    plot = PlotData(shortest_cm=100 * shortest, frames=frames, fit_error_mm=fit_error,
                    valid_fraction=np.array([s.valid_fraction for s in items]),
                    manual_share=np.array([s.manual_frames / s.frames for s in items]), confidence=confidence,
                    embedding=embedding, labels=labels[keep] if len(embedding) else labels[:0])
    return _json_ready(stats), plot


# ---- files ---------------------------------------------------------------------------------

def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _bars(ax, counts: dict, what: str, title: str) -> None:
    names = list(counts)
    ax.bar(range(len(names)), [counts[n][what] for n in names], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_title(title)


def write_plots(stats: dict, p: PlotData, out: Path) -> list[Path]:
    """The PNGs of ``PLOTS`` (matplotlib's Agg canvas: no display needed)."""
    from matplotlib.figure import Figure

    written = []

    def figure(n: int = 1, width: float = 6.0):
        fig = Figure(figsize=(width * n, 4.0), layout="constrained")
        return fig, fig.subplots(1, n, squeeze=False)[0]

    fig, (ax,) = figure()
    ax.hist(p.shortest_cm, bins=50, color="tab:blue")
    m = stats["mean_shortest_joint_distance_cm"]
    if m is not None:
        ax.axvline(m, color="k", ls="--", label=f"mean {m:.2f} cm")
        ax.legend()
    ax.set_xlabel("shortest left-right joint distance (cm)")
    ax.set_ylabel("frames")
    ax.set_title(f"contacting frames: {_percent(stats['contact_ratio'])}")
    written.append(out / PLOTS[0])
    _save(fig, written[-1])

    fig, (ax,) = figure()
    ax.hist(p.frames, bins=BINS, color="tab:blue")
    ax.set_xlabel("frames per sequence")
    ax.set_ylabel("sequences")
    written.append(out / PLOTS[1])
    _save(fig, written[-1])

    for name, key, what in ((PLOTS[2], "categories", "category"), (PLOTS[3], "splits", "split")):
        fig, axes = figure(2)
        _bars(axes[0], stats[key], "sequences", f"sequences per {what}")
        _bars(axes[1], stats[key], "frames", f"frames per {what}")
        written.append(out / name)
        _save(fig, written[-1])

    fig, axes = figure(4, 4.5)
    axes[0].hist(p.fit_error_mm, bins=50, color="tab:blue")
    axes[0].set_xlabel("fit error (mm), valid (frame, hand)")
    axes[1].hist(p.valid_fraction, bins=BINS, range=(0, 1), color="tab:green")
    axes[1].set_xlabel("valid fraction per sequence")
    axes[2].hist(p.manual_share, bins=BINS, range=(0, 1), color="tab:orange")
    axes[2].set_xlabel("share of frames with manual 2D annotation")
    axes[3].hist(p.confidence, bins=BINS, range=(0, 1), color="tab:purple")
    axes[3].axvline(MIN_CONFIDENCE, color="k", lw=1)
    axes[3].set_xlabel(f"frame confidence (training takes >= {MIN_CONFIDENCE})")
    written.append(out / PLOTS[4])
    _save(fig, written[-1])

    fig, (ax,) = figure(1, 7.0)
    emb, labels = p.embedding, p.labels
    if len(emb):
        for cat in sorted(set(labels.tolist())):
            sel = labels == cat
            ax.scatter(emb[sel, 0], emb[sel, 1], s=4, label=f"{cat} ({int(sel.sum())})")
        ax.legend(markerscale=3, fontsize="small")
        ax.set_title(f"t-SNE of {len(emb)} frames' hand poses")
    else:
        ax.text(0.5, 0.5, stats["tsne"].get("skipped", "no t-SNE"), ha="center", va="center")
    ax.set_xticks([])
    ax.set_yticks([])
    written.append(out / PLOTS[5])
    _save(fig, written[-1])
    return written


def _json_ready(x):
    """numpy scalars -> Python numbers, NaN -> null (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x


def write_stats(root: Path, out_dir: Path | None = None, opts: StatsOptions | None = None) -> dict:
    """Compute the statistics of the export ``root`` and write them to ``out_dir`` (default
    ``<root>/stats``): the plots, then stats.json. Returns what stats.json holds."""
    root = Path(root)
    out = Path(out_dir) if out_dir is not None else root / STATS_DIR
    with writing(out, "stats"):
        stats, plot = _compute(root, opts)
        stats["plots"] = [p.name for p in write_plots(stats, plot, out)]
        atomic_write_text(out / STATS_JSON, json.dumps(stats, indent=2, allow_nan=False) + "\n")
    return stats


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def export_folder(path: Path) -> Path:
    """An export folder (with manifest.parquet), or a session folder meaning its export/."""
    path = Path(path)
    for folder in (path, path / "export"):
        if (folder / MANIFEST_NAME).is_file():
            return folder
    raise SchemaError(path, f"no {MANIFEST_NAME} here or in export/: not an export folder (run `handdiffuse "
                            "export`, or pass the folder it wrote)")


# ---- the command ---------------------------------------------------------------------------

@dataclass
class StatsCommand(StatsOptions):
    """Dataset statistics of an export: the paper's mean shortest joint distance and contacting-frame
    ratio, frames per sequence, categories, splits, fit quality, a t-SNE of poses -> stats.json + PNGs."""

    path: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Export folder (with manifest.parquet), or a session folder (its export/)."""
    out: Path | None = None
    """Folder for stats.json and the plots (default: <export folder>/stats)."""

    def run(self) -> int:
        from pipeline.log import LOG

        try:
            root = export_folder(self.path)
            out = self.out or root / STATS_DIR
            s = write_stats(root, out, self)
        except SchemaError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        cm = s["mean_shortest_joint_distance_cm"]
        print(f"stats {root}: {s['sequences']} sequences, {s['frames']} frames ({s['frames_both_hands_valid']} "
              f"with both hands valid); mean shortest joint distance "
              f"{'n/a' if cm is None else f'{cm:.2f} cm'}; contacting frames {_percent(s['contact_ratio'])} "
              f"(< {1000 * self.contact_threshold:g} mm); {_percent(s['fit_quality']['confidence']['share_at_least'])} "
              f"of frames of confidence >= {MIN_CONFIDENCE} -> {out / STATS_JSON}")
        LOG.info("stats: done in %.1f s", s["seconds"])
        return EXIT_OK
