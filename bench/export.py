"""Dataset export write speed and training-loader speed, on a synthetic dataset.

Sequences of smooth random two-hand motion in realistic ranges (default 250 x 1000 frames =
250,000 frames, the paper's dataset size): joints around two wrists 20 cm apart moving
within ~10 cm, MANO parameters as sums of slow sines (global orientation ~1 rad, finger
pose ~0.3 rad), ~3% of (frame, hand) invalid in runs, ~1% of frames with manual annotation,
fit errors of 1-5 mm. Made with numpy; no hand model.

1. write: ``data_schemas.dataset.append_to_dataset`` into a temp folder (validation,
   fingerprints, gzip + checksums, shards, manifest); rate = shard bytes on disk / seconds.
2. loader: ``torch.utils.data.DataLoader(WindowDataset(root, window=200), batch_size=64,
   shuffle=True, num_workers=2)`` (the train split); after ``--warmup`` batches (the workers
   start and preload the sequences they touch), windows per second over ``--batches`` batches.

    .venv/bin/python -m bench.export [--sequences 250] [--frames 1000] [--batches 300]

Last line: ``export frames=<n> write_mb_per_s=<w> loader_windows_per_s=<r>``
(issue target: >= 2000 windows of 200 frames per second on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_schemas.dataset import MB, DatasetOptions, append_to_dataset
from data_schemas.shard import ShardSequence
from generation.data import WindowDataset

CATEGORIES = ("clasp", "interlock", "tap", "rub", "pinch", "tutting")


def smooth(rng: np.random.Generator, frames: int, shape: tuple[int, ...], amplitude: float, fps: float,
           terms: int = 3) -> np.ndarray:
    """(frames, *shape) sums of ``terms`` sines of 0.05-1 Hz, each axis its own, peak ~``amplitude``."""
    t = np.arange(frames, dtype=np.float32).reshape((frames,) + (1,) * len(shape)) / fps  # (F, 1, ...)
    out = np.zeros((frames,) + shape, np.float32)
    for _ in range(terms):
        hz = rng.uniform(0.05, 1.0, shape).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, shape).astype(np.float32)
        out += (amplitude / terms) * np.sin(2 * np.pi * hz * t + phase)
    return out


def runs(rng: np.random.Generator, frames: int, share: float, mean_run: int) -> np.ndarray:
    """(frames,) bool with about ``share`` True, in runs of ~``mean_run`` frames."""
    out = np.zeros(frames, bool)
    for start in rng.integers(0, frames, rng.poisson(share * frames / mean_run)):
        out[start:start + rng.integers(1, 2 * mean_run)] = True
    return out


def make_sequence(i: int, frames: int, fps: float, rng: np.random.Generator) -> ShardSequence:
    wrists = np.array([[-0.1, 0.0, 0.45], [0.1, 0.0, 0.45]], np.float32)  # (2, 3) m, left / right
    transl = wrists + smooth(rng, frames, (2, 3), 0.1, fps)  # (F, 2, 3)
    rest = rng.uniform(-0.1, 0.1, (2, 21, 3)).astype(np.float32)  # (2, 21, 3) joint offsets from the wrist
    rest[:, 0] = 0.0
    joints = transl[:, :, None] + rest + smooth(rng, frames, (2, 21, 3), 0.02, fps)  # (F, 2, 21, 3)
    invalid = np.stack([runs(rng, frames, 0.03, 8) for _ in range(2)], axis=1)  # (F, 2)
    fit_error = rng.uniform(0.001, 0.005, (frames, 2)).astype(np.float32)
    fit_error[invalid] = np.nan
    return ShardSequence(
        name=f"bench.s{i:04d}", fps=fps, joints=joints.reshape(frames, 42, 3),  # (F, 42, 3)
        global_orient=rng.uniform(-1.5, 1.5, (1, 2, 3)) + smooth(rng, frames, (2, 3), 1.0, fps),
        hand_pose=smooth(rng, frames, (2, 45), 0.3, fps), betas=rng.normal(0, 1, (2, 10)), transl=transl,
        valid=~invalid, manual=np.stack([runs(rng, frames, 0.01, 5)] * 2, axis=1), fit_error=fit_error,
        confidence=np.where(invalid, 0, rng.uniform(0.3, 1, (frames, 2))).astype(np.float32),
        session="bench", subject=f"subject-{i % 10:02d}", category=CATEGORIES[i % len(CATEGORIES)],
        capture_date="2026-11-25",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=250)
    ap.add_argument("--frames", type=int, default=1000, help="frames per sequence")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--shard-mb", type=float, default=DatasetOptions.shard_mb)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=30, help="batches before timing")
    ap.add_argument("--batches", type=int, default=300, help="batches timed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="write here (kept) instead of a temp folder")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    seqs = [make_sequence(i, args.frames, args.fps, rng) for i in range(args.sequences)]
    n_frames = args.sequences * args.frames
    print(f"made {args.sequences} sequences x {args.frames} frames in {time.perf_counter() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp) / "dataset"
        # 1.
        s = append_to_dataset(root, seqs, DatasetOptions(shard_mb=args.shard_mb))
        del seqs
        on_disk = sum(p.stat().st_size for p in root.glob("shard-*.h5"))
        write_mb_per_s = on_disk / MB / s.seconds
        print(f"write: {len(s.written)} sequences, {s.frames} frames -> {len(s.shards_written)} shards, "
              f"{on_disk / MB:.1f} MB on disk in {s.seconds:.1f} s = {write_mb_per_s:.1f} MB/s "
              f"({s.frames / s.seconds:.0f} frames/s)", flush=True)
        # 2.
        ds = WindowDataset(root, window=args.window)
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
        it = iter(loader)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            next(it)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        windows = 0
        for _ in range(args.batches):
            windows += len(next(it)["sequence"])
        seconds = time.perf_counter() - t0
        del it
        rate = windows / seconds
        print(f"loader: {len(ds)} train windows of {args.window} frames in {len(ds.names)} sequences; warm-up "
              f"{args.warmup} batches {warm:.1f} s; {windows} windows in {seconds:.2f} s", flush=True)
    print(f"export frames={n_frames} write_mb_per_s={write_mb_per_s:.1f} loader_windows_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
