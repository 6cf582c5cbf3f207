"""Kill every stage at random moments, run it again, and compare what it made with an
uninterrupted run's, by content.

1. a tiny studio session (8 cameras, 2 takes of ``--frames`` frames); every stage run once,
   uninterrupted, through the real CLI: calibrate, detect, triangulate, fit, export, train;
   the session is kept as it stands before each stage
2. per stage, ``--kills`` times: a copy of the session as it stood before the stage; the stage
   started and SIGKILLed (its whole process group, workers included) at a random moment of
   its uninterrupted run time past the CLI's start-up; then run again to the end
3. the rerun's outputs against the uninterrupted run's: arrays and values, not file bytes
   (calibration parameters; keypoints, joints, fits; every exported sequence's arrays and
   manifest row; the trained weights and loss log). ``identical`` counts reruns whose outputs
   all equal the reference; ``leftovers`` counts temp files (``.<name>.partial-<pid>``),
   detection chunk folders and shards the manifest does not name, left after the rerun;
   ``lost`` counts sequences or frames the reference has and the rerun does not

    .venv/bin/python -m bench.reliability [--kills 5] [--frames 12] [--seed 0] [--stages fit,export]

Last line: ``reliability kills=<n> identical=<n> leftovers=<n> lost=<n>`` (target:
identical = kills, leftovers = lost = 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("calibrate", "detect", "triangulate", "fit", "export", "train")
RUN = "run"  # the training run folder, inside the session folder for the copies
TRAIN = ["--size", "tiny", "--window", "8", "--batch-size", "4", "--threads", "1", "--device", "cpu",
         "--shde-steps", "30", "--ihde-steps", "30", "--checkpoint-every", "5", "--log-every", "5"]


def command(stage: str, session: Path) -> list[str]:
    hd = [sys.executable, "-m", "pipeline.cli"]
    if stage == "export":
        return hd + ["export", str(session), "--split-ratios", "1", "0", "0"]
    if stage == "train":
        return hd + ["train", "--shards", str(session / "export"), "--run", str(session / RUN), *TRAIN]
    return hd + [stage, str(session)]


def run_stage(stage: str, session: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(command(stage, session), cwd=ROOT, capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        raise SystemExit(f"{stage} failed on {session}:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def kill_at(stage: str, session: Path, after: float) -> bool:
    """Start ``stage``, SIGKILL its process group after ``after`` s; whether it was still running."""
    p = subprocess.Popen(command(stage, session), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=ENV, start_new_session=True)
    try:
        p.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


# --- 3. contents ---------------------------------------------------------------------------------

def _equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def _fields(obj, names) -> dict:
    return {n: getattr(obj, n) for n in names}


def contents(stage: str, session: Path) -> dict:
    """What ``stage`` made in ``session``: name -> array or value (missing outputs are left out)."""
    from data_schemas.calibration import read_calibration
    from data_schemas.joints3d import read_joints3d
    from data_schemas.keypoints2d import read_keypoints2d
    from data_schemas.mano import read_mano

    out: dict = {}
    seqs = sorted(p.name for p in (session / "sequences").iterdir() if p.is_dir())
    if stage == "calibrate":
        path = session / "calibration" / "calibration.toml"
        if path.is_file():
            rig = read_calibration(path)
            for cam in rig.cameras:
                out.update({f"{cam.name}.{k}": v for k, v in vars(cam).items() if k != "name"})
            out.update({f"png.{p.name}": True for p in path.parent.glob("*.png")})
    elif stage in ("detect", "triangulate", "fit"):
        name, read = {"detect": ("keypoints2d.h5", read_keypoints2d), "triangulate": ("joints3d.h5", read_joints3d),
                      "fit": ("mano.h5", read_mano)}[stage]
        for seq in seqs:
            path = session / "sequences" / seq / name
            if path.is_file():
                data = read(path)
                for k, v in vars(data).items():
                    if k == "quality":
                        out.update({f"{seq}.quality.{q}": x for q, x in vars(v).items()})
                    else:
                        out[f"{seq}.{k}"] = v
    elif stage == "export":
        from data_schemas.manifest import read_manifest
        from data_schemas.shard import ShardReader

        folder = session / "export"
        if (folder / "manifest.parquet").is_file():
            m = read_manifest(folder)
            for row in m.to_dict("records"):
                out.update({f"{row['name']}.row.{k}": v for k, v in row.items() if k not in ("shard", "group")})
                with ShardReader(folder / row["shard"]) as r:
                    seq = r.read(row["name"])
                out.update({f"{row['name']}.{k}": v for k, v in vars(seq).items()})
    elif stage == "train":
        import torch

        run = session / RUN
        if (run / "model.pt").is_file():
            state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
            weights = state.get("model", state) if isinstance(state, dict) else state
            out.update({f"model.{k}": v.numpy() for k, v in weights.items() if hasattr(v, "numpy")})
        if (run / "loss.jsonl").is_file():
            out["loss.jsonl"] = (run / "loss.jsonl").read_text()
    return out


def compare(reference: dict, got: dict) -> tuple[bool, int]:
    """(identical, lost): every reference entry equal; entries the rerun lacks (for sequence
    arrays, frames lacked)."""
    lost = 0
    same = set(reference) == set(got)
    for k, ref in reference.items():
        if k not in got:
            lost += 1
            continue
        a, b = got[k], ref
        if isinstance(b, np.ndarray) or isinstance(a, np.ndarray):
            if not _equal(a, b):
                same = False
                if np.ndim(a) and np.ndim(b) and np.shape(a)[0] < np.shape(b)[0]:
                    lost += 1
        elif a != b and not (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)):
            same = False
    return same, lost


def leftovers(session: Path) -> list[Path]:
    from data_schemas.atomic import is_partial

    found = [p for p in session.rglob(".*") if is_partial(p)]
    found += [p for p in session.rglob(".detect") if p.is_dir()]
    export = session / "export"
    if (export / "manifest.parquet").is_file():
        from data_schemas.manifest import read_manifest

        listed = set(read_manifest(export)["shard"])
        found += [p for p in export.glob("shard-*.h5") if p.name not in listed]
    return found


# --- the benchmark --------------------------------------------------------------------------------

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HANDDIFFUSE_LOG": "WARNING"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5, help="kills per stage")
    ap.add_argument("--frames", type=int, default=12, help="frames per take")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to kill")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder)")
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)} (known: {', '.join(STAGES)})")
    rng = np.random.default_rng(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    # 1.
    session = work / "reference"
    if not (session / "session.toml").is_file():
        subprocess.run([sys.executable, "-m", "pipeline.cli", "studio", "--out", str(session), "--sequences", "2",
                        "--frames", str(args.frames), "--board-frames", "60", "--seed", "3"],
                       cwd=ROOT, check=True, capture_output=True, env=ENV)
    before: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    for stage in STAGES:
        before[stage] = work / f"before-{stage}"
        if not before[stage].is_dir():
            shutil.copytree(session, before[stage], symlinks=True)
        seconds[stage] = run_stage(stage, session)
        print(f"  reference {stage}: {seconds[stage]:.1f} s", file=sys.stderr, flush=True)
    reference = {s: contents(s, session) for s in stages}
    # the CLI's start-up (imports), before which a kill proves nothing
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", str(session / "session.toml")], cwd=ROOT,
                   capture_output=True, env=ENV)
    startup = time.perf_counter() - t0
    # 2. + 3.
    kills = identical = left = lost = 0
    for stage in stages:
        for k in range(args.kills):
            trial = work / f"{stage}-{k}"
            shutil.rmtree(trial, ignore_errors=True)
            for attempt in range(6):  # a run that ends before its moment is no kill: start over, earlier
                shutil.copytree(before[stage], trial, symlinks=True)
                moment = startup + float(rng.uniform(0.0, 0.9)) * max(seconds[stage] - startup, 0.1)
                if attempt == 5:  # a stage quicker than its start-up: killed while it starts
                    moment = 0.5 * startup
                if kill_at(stage, trial, moment):
                    break
                shutil.rmtree(trial)
            else:
                raise SystemExit(f"{stage} ended before every kill moment")
            run_stage(stage, trial)
            same, n_lost = compare(reference[stage], contents(stage, trial))
            extra = leftovers(trial)
            kills += 1
            identical += same
            left += len(extra)
            lost += n_lost
            print(f"  {stage} kill {k + 1} at {moment:.1f} s: "
                  f"{'identical' if same else 'DIFFERENT'}, {len(extra)} leftovers, {n_lost} lost"
                  + (f" {[str(p.relative_to(trial)) for p in extra]}" if extra else ""), file=sys.stderr, flush=True)
            shutil.rmtree(trial, ignore_errors=True)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"reliability kills={kills} identical={identical} leftovers={left} lost={lost}")


if __name__ == "__main__":
    main()
