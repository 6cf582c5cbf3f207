"""``handdiffuse train`` and ``handdiffuse sample``: the generator's stages over a dataset and a run folder.

    handdiffuse train  --shards sessions/demo/export --run runs/demo [--preset handdiffuse] [--size cpu]
    handdiffuse sample --run runs/demo --control {none,inbetween,trajectory,keypoints2d} [--n 4]

``sample`` writes into ``--out`` (default ``<run>/samples``)::

    samples/
      dataset/                shard-*.h5 + manifest.parquet: the generated sequences in the export
                              format (split "train": ready to augment a dataset), named
                              <run>.<control>.s<seed>.<i>
      <control>.png           filmstrip of the first samples, drawn with the hand model
      <control>-s<seed>.mp4   video of the first sample
      <control>.json          what was sampled, how long it took, how well the control held

Controls take their targets from reference windows of a dataset (``--reference``, default the
run's training dataset; ``--reference-split``, default test): key frames (in-betweening), both
wrists' trajectories, or the reference's joints seen by a camera (``--calibration`` +
``--camera``, else a virtual camera 60 cm in front of the motion) for the 2D-keypoint control.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from data_schemas.atomic import atomic_write_text
from data_schemas.errors import EXIT_OK, EXIT_USAGE, SchemaError
from generation.denoiser import Size
from generation.evaluate import EvaluateOptions
from generation.model import Preset
from generation.train import RUN_JSON, TrainOptions

CONTROLS = ("none", "inbetween", "trajectory", "keypoints2d")
ControlName = Literal[CONTROLS]  # type: ignore[valid-type]


@dataclass
class TrainCommand(TrainOptions):
    """Train the HandDiffuse generator (SHDe, then IHDe) on the train split of exported shards ->
    RUN/model.pt, with checkpoints, loss.jsonl and loss.png; rerunning resumes a killed run."""

    shards: Path = Path("sessions/demo/export")
    """Dataset folder (shards + manifest.parquet) of `handdiffuse export` or `handdiffuse import`."""
    run: Path = Path("runs/handdiffuse")
    """Run folder."""
    preset: Preset = "handdiffuse"
    """Model: the complete HandDiffuse, an ablation of the paper's Table 3, or the MDM-style baseline."""
    size: Optional[Size] = None
    """Denoiser size (default the preset's: paper)."""
    window: Optional[int] = None
    """Frames per training window and sample (default 200)."""

    def model_config(self):
        from generation.model import PRESETS

        cfg = PRESETS[self.preset]
        changes = {k: v for k, v in (("size", self.size), ("window", self.window)) if v is not None}
        return dataclasses.replace(cfg, **changes)

    def run_stage(self) -> int:
        from generation.train import train

        try:
            s = train(self.shards, self.run, self.model_config(), self)
        except SchemaError:
            raise  # bad input: the CLI prints it, exit 1
        except (ValueError, FloatingPointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if s.resumed_from >= s.steps:
            print(f"{self.run}: trained to step {s.steps} already; nothing to do (raise --ihde-steps to go on)")
        else:
            print(s.line())
            print(f"model -> {self.run / 'model.pt'}, loss curves -> {self.run / 'loss.png'}")
        return EXIT_OK


@dataclass
class SampleCommand:
    """Sample two-hand motion from a trained generator, under a control -> OUT/dataset (shards),
    OUT/<control>.png, OUT/<control>-s<seed>.mp4, OUT/<control>.json."""

    run: Path = Path("runs/handdiffuse")
    """Run folder with model.pt."""
    control: ControlName = "none"
    """none; inbetween (first and last --keyframes frames of a reference given); trajectory (both
    wrists' rotation and position of a reference given); keypoints2d (a reference's joints seen
    by one camera given as 2D keypoints)."""
    n: int = 4
    """Samples."""
    frames: Optional[int] = None
    """Frames per sample (default the model's window)."""
    ddim_steps: int = 50
    """DDIM steps."""
    eta: float = 0.0
    """DDIM eta (0: deterministic given the seed)."""
    seed: int = 0
    """Seed of the samples (and their names: <run>.<control>.s<seed>.<i>)."""
    out: Optional[Path] = None
    """Output folder (default RUN/samples)."""
    reference: Optional[Path] = None
    """Dataset the controls' targets come from (default the run's training dataset)."""
    reference_split: Literal["train", "val", "test"] = "test"
    """Split of --reference whose windows give the targets (in order, repeated when fewer than --n)."""
    keyframes: int = 5
    """Given frames at each end (inbetween)."""
    calibration: Optional[Path] = None
    """calibration.toml whose --camera sees the reference (keypoints2d)."""
    camera: Optional[str] = None
    """Camera name in --calibration (keypoints2d)."""
    strength: float = 1.0
    """Guidance strength of keypoints2d, in [0, 1]."""
    video: bool = True
    """Write the MP4 of the first sample."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu", "cuda" ..."""

    def run_stage(self) -> int:
        try:
            summary = sample_run(self)
        except SchemaError:
            raise
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"sampled {summary['n']} x {summary['frames']} frames ({self.control}) from {self.run} in "
              f"{summary['sample_seconds']:.2f} s -> {summary['dataset']}"
              + "".join(f", {k} {v:.3g}" for k, v in summary["control_error"].items()))
        print(f"pictures: {summary['png']}" + (f", {summary['video']}" if summary.get("video") else ""))
        return EXIT_OK


def _reference(path: Path, split: str, frames: int, n: int):
    import torch

    from generation.controls import Reference
    from generation.data import WindowDataset
    from generation.train import FIELDS

    ds = WindowDataset(path, window=frames, split=split, fields=FIELDS)
    windows = ds.complete_windows()
    if not len(windows):
        raise SchemaError(path, f"no complete {frames}-frame window in the {split} split for the control's "
                                f"targets (choose another --reference-split or --frames)")
    pick = windows[np.linspace(0, len(windows) - 1, min(n, len(windows))).round().astype(int)]
    pick = np.resize(pick, n)  # repeated when the split has fewer windows than samples
    items = [ds[int(i)] for i in pick]
    return Reference(*(torch.stack([it[f] for it in items]) for f in FIELDS)), \
        [f"{ds.names[ds.locate(int(i))[0]]}@{ds.locate(int(i))[1]}" for i in pick]


def _camera(cmd: SampleCommand, ref):
    import torch

    from generation.controls import PinholeCamera, default_camera

    if cmd.calibration is None:
        return default_camera(ref.joints[0, 0, 0]), "virtual camera 60 cm in front of the first sample"
    from data_schemas.calibration import read_calibration

    rig = read_calibration(cmd.calibration)
    if cmd.camera is None or cmd.camera not in rig.names:
        raise SchemaError(cmd.calibration, f"no camera {cmd.camera!r} (pass --camera, one of {', '.join(rig.names)})")
    cam = rig[cmd.camera]
    f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return PinholeCamera(f(cam.matrix), f(cam.R), f(cam.translation)), f"camera {cmd.camera} of {cmd.calibration}"


def sample_run(cmd: SampleCommand) -> dict:
    """Sample, check the control, write the shards and pictures (module docstring)."""
    import torch

    from generation import controls
    from generation.output import motions_to_sequences
    from generation.render import render_filmstrip, render_video
    from generation.device import resolve_device
    from generation.sample import sample
    from generation.train import load_model
    from data_schemas.dataset import DatasetOptions, append_to_dataset

    if cmd.n < 1 or cmd.ddim_steps < 1:
        raise ValueError("--n and --ddim-steps must be at least 1")
    device = resolve_device(cmd.device)
    model = load_model(cmd.run, device)
    frames = cmd.frames or model.cfg.window
    out = cmd.out or cmd.run / "samples"
    info = json.loads((cmd.run / RUN_JSON).read_text(encoding="utf-8")) if (cmd.run / RUN_JSON).is_file() else {}
    ref_path = cmd.reference or (Path(info["shards"]) if "shards" in info else None)

    control, sources, check = None, [], {}
    if cmd.control != "none":
        if ref_path is None:
            raise ValueError(f"--control {cmd.control} needs --reference (a dataset folder)")
        ref, sources = _reference(ref_path, cmd.reference_split, frames, cmd.n)
        ref = controls.Reference(*(x.to(device) for x in (ref.joints, ref.global_orient, ref.hand_pose)))
        if cmd.control == "inbetween":
            control = controls.InBetween(model, ref, cmd.keyframes)
        elif cmd.control == "trajectory":
            control = controls.Trajectory(model, ref)
        else:
            camera, seen_by = _camera(cmd, ref)
            camera = controls.PinholeCamera(*(x.to(device) for x in (camera.K, camera.R, camera.t)))
            control = controls.Keypoints2DGuidance(model, model.rep.frame(ref.joints), camera,
                                                   camera.project(ref.joints), strength=cmd.strength)
            sources = [f"{s} seen by {seen_by}" for s in sources]

    t0 = time.perf_counter()
    motion = sample(model, cmd.n, frames, cmd.ddim_steps, cmd.eta, cmd.seed, control)
    seconds = time.perf_counter() - t0
    if cmd.control == "inbetween":
        k = cmd.keyframes
        err = (motion.joints - ref.joints).norm(dim=-1)
        check["keyframe_error_mm"] = 1000 * float(torch.cat([err[:, :k], err[:, -k:]], 1).max())
    elif cmd.control == "trajectory":
        check["wrist_error_mm"] = 1000 * float((motion.joints[:, :, [0, 21]] - ref.joints[:, :, [0, 21]]).norm(dim=-1).max())
    elif cmd.control == "keypoints2d":
        check["keypoint_error_px"] = float((control.camera.project(motion.joints) - control.keypoints).norm(dim=-1).mean())

    joints, go, hp = (x.detach().cpu().numpy() for x in (motion.joints, motion.global_orient, motion.hand_pose))
    fps = float(info.get("fps", 30.0))
    prefix = f"{cmd.run.name}.{cmd.control}.s{cmd.seed}"
    seqs = motions_to_sequences(joints, go, hp, fps=fps, prefix=prefix, category=cmd.control)
    dataset = out / "dataset"
    append_to_dataset(dataset, seqs, DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    png = render_filmstrip(joints, go, hp, out / f"{cmd.control}.png",
                           title=f"{cmd.run.name}: {cmd.control}, seed {cmd.seed}")
    summary = {"run": str(cmd.run), "control": cmd.control, "n": cmd.n, "frames": frames,
               "ddim_steps": cmd.ddim_steps, "eta": cmd.eta, "seed": cmd.seed, "sample_seconds": seconds,
               "control_error": check, "references": sources, "dataset": str(dataset), "png": str(png)}
    if cmd.video:
        summary["video"] = str(render_video(joints[0], go[0], hp[0], out / f"{cmd.control}-s{cmd.seed}.mp4", fps))
    atomic_write_text(out / f"{cmd.control}.json", json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class EvaluateCommand(EvaluateOptions):
    """Evaluate trained generators on the held-out split of a dataset: FID, Diversity and
    penetration per condition -> OUT/tables.md (the paper's Tables 2 and 3), OUT/metrics.json,
    and each RUN/metrics.json."""

    runs: list[Path] = dataclasses.field(default_factory=list)
    """Run folders (each with model.pt; one window length)."""
    shards: Path = Path("sessions/demo/export")
    """Dataset folder: its train split trains the feature extractor, --split is measured."""
    out: Path = Path("runs/evaluation")
    """Folder for tables.md, metrics.json and the feature extractor."""

    def run_stage(self) -> int:
        from generation.evaluate import evaluate

        if not self.runs:
            print("error: evaluate needs at least one run (--runs runs/NAME ...)", file=sys.stderr)
            return EXIT_USAGE
        try:
            s = evaluate(self.runs, self.shards, self.out, self)
        except SchemaError:
            raise
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        print((self.out / "tables.md").read_text(encoding="utf-8"))
        print(f"evaluated {len(s['runs'])} runs on {s['real_windows']} real windows in {s['seconds']:.1f} s -> "
              f"{self.out / 'tables.md'}, {self.out / 'metrics.json'}")
        return EXIT_OK
