"""Evaluating generators on a held-out split: FID, Diversity, penetration; the paper's Tables 2 and 3.

For trained runs (``generation.train``) of one window length T and a dataset:

    1. real windows: the complete T-frame windows (every ``real_stride`` frames, at most
       ``max_real_windows`` of them, evenly spread) of the ``split`` (test) sequences
    2. the feature extractor (``generation.motion_features``): loaded when its file holds the dataset's
       train-split hash, else trained on the train split and saved (so every method is measured
       with the same frozen features)
    3. per run, condition (unconditioned, in-betweening, trajectory) and repetition r = 1 ... R:
       n samples (seed + r); the controls take their targets from n real windows drawn with the
       same seed; FID(generated, real) on the features, Diversity (MDM: ``diversity_pairs``
       pairs), penetration of the two hand meshes over all the samples' frames
    4. per metric: mean and 95% interval over the R repetitions (``metrics.mean_interval``)
    5. the "Real" row: the real windows themselves against the train split's windows (FID: what
       held-out real motion scores), their Diversity and penetration (from their own parameters)

Tables (markdown + JSON): Table 2 = methods (the complete model, the MDM-style baseline, any
other run) x conditions x {FID, Diversity, SDF}; Table 3 = the representation and loss
ablations x {FID, Diversity, SDF}, unconditioned. SDF is the mean penetration depth (mm) over
the frames that penetrate, with the share of those frames.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_schemas.atomic import atomic_write_text
from data_schemas.dataset import dataset_hash
from data_schemas.errors import SchemaError
from data_schemas.manifest import manifest_path
from generation import controls
from generation.data import WindowDataset
from generation.device import resolve_device
from generation.motion_features import EvaluatorConfig, load_evaluator, train_evaluator
from generation.metrics import diversity, frechet_distance, mean_interval
from generation.model import PRESETS, HandDiffuse
from generation.output import motion_parameters
from generation.penetration import PenetrationResult, penetration
from generation.sample import sample
from generation.train import FIELDS, load_model

LOG = logging.getLogger("handdiffuse")
CONDITIONS = ("unconditioned", "inbetween", "trajectory")
LABELS = {"handdiffuse": "HandDiffuse (complete, local rep)", "mdm": "MDM-style baseline",
          "global-rep": "global rep", "no-shde": "w/o SHDe", "no-potential": "w/o potential loss",
          "no-shape": "w/o shape loss"}
TABLE3 = ("global-rep", "no-shde", "no-potential", "no-shape", "handdiffuse")
METRICS = ("fid", "diversity", "sdf_mm", "penetrating_frames")


@dataclass
class EvaluateOptions:
    """How the generators are measured."""

    split: str = "test"
    """Held-out split the real windows come from."""
    real_stride: int = 0
    """Frames between the starts of real windows (0: half a window)."""
    max_real_windows: int = 1000
    """Real windows used at most (evenly spread over the split)."""
    samples: int = 32
    """Samples per run, condition and repetition (at most as many as real windows are reused)."""
    repetitions: int = 3
    """Repetitions (seeds) the mean and 95% interval are over."""
    ddim_steps: int = 50
    """DDIM steps of sampling."""
    keyframes: int = 5
    """Given frames at each end for in-betweening."""
    diversity_pairs: int = 300
    """Pairs of MDM's Diversity protocol."""
    evaluator: Path | None = None
    """Feature extractor file to use, trained on this dataset's train split (default
    OUT/evaluator.pt, trained there when missing or trained on other data)."""
    evaluator_steps: int = 20000
    """Training steps of a new feature extractor."""
    seed: int = 0
    """First seed of the repetitions (and of a new feature extractor)."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu", "cuda" ..."""


@dataclass
class RunResult:
    run: str
    preset: str
    label: str
    conditions: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # condition -> metric -> per repetition


def preset_of(model: HandDiffuse) -> str:
    """The name of the preset a model's configuration is (ignoring size, window and schedule), or ''."""
    def key(cfg):
        return dataclasses.replace(cfg, size="paper", window=200, diffusion=PRESETS["handdiffuse"].diffusion)
    mine = key(model.cfg)
    return next((name for name, cfg in PRESETS.items() if key(cfg) == mine), "")


def _real_windows(shards: Path, split: str, window: int, opts: EvaluateOptions) -> dict[str, np.ndarray]:
    ds = WindowDataset(shards, window=window, split=split, fields=FIELDS + ("transl", "betas"),
                       stride=opts.real_stride or max(1, window // 2))
    idx = ds.complete_windows()
    if len(idx) < 2:
        raise SchemaError(manifest_path(shards), f"{'no' if not len(idx) else 'one'} complete {window}-frame window "
                                                 f"in the {split} split to evaluate on; it takes two (export more "
                                                 "sequences, lower --real-stride, or train with a shorter --window)")
    if len(idx) > opts.max_real_windows:
        idx = idx[np.linspace(0, len(idx) - 1, opts.max_real_windows).round().astype(int)]
    items = [ds[int(i)] for i in idx]
    return {f: torch.stack([it[f] for it in items]).numpy() for f in FIELDS + ("transl", "betas")}


def _penetration(joints, global_orient, hand_pose, transl=None, betas=None) -> PenetrationResult:
    """Penetration over all frames of (N, T, ...) motions (parameters from the joints when no transl)."""
    from hand_model.posing import hand_model_for

    model = hand_model_for("open_hand")
    depths = []
    for i in range(len(joints)):
        if transl is None:
            b, t = motion_parameters(joints[i], global_orient[i], hand_pose[i], model)
        else:
            b, t = betas[i], transl[i]
        depths.append(penetration(global_orient[i], hand_pose[i], b, t, model=model).depth_per_frame)
    return PenetrationResult.of(np.concatenate(depths))


def _metrics(features: np.ndarray, real_features: np.ndarray, pen: PenetrationResult, pairs: int,
             rng: np.random.Generator) -> dict[str, float]:
    return {"fid": frechet_distance(features, real_features),
            "diversity": diversity(features, pairs, rng=rng) if len(features) > 1 else 0.0,
            "sdf_mm": 1000 * pen.mean_depth, "penetrating_frames": pen.fraction}


def evaluate(runs: list[Path], shards: Path, out: Path, opts: EvaluateOptions) -> dict:
    """Steps 1-5 for ``runs`` on ``shards``; writes OUT/tables.md, OUT/metrics.json, RUN/metrics.json."""
    t0 = time.perf_counter()
    device = resolve_device(opts.device)
    if not runs:
        raise ValueError("evaluate needs at least one run folder")
    models = [load_model(r, device) for r in runs]
    windows = {m.cfg.window for m in models}
    if len(windows) > 1:
        raise SchemaError(runs[0], f"the runs have different windows ({sorted(windows)}): evaluate runs of one length")
    T = windows.pop()
    # 1.
    real = _real_windows(shards, opts.split, T, opts)
    n_real = len(real["joints"])
    # 2.
    data_hash = dataset_hash(shards, "train")
    ev_path = opts.evaluator or out / "evaluator.pt"
    try:
        evaluator = load_evaluator(ev_path, expect_data_hash=data_hash, device=str(device))
    except SchemaError:
        if opts.evaluator is not None:
            raise  # the user's file: never overwritten
        LOG.info("evaluate: training the feature extractor (%d steps) -> %s", opts.evaluator_steps, ev_path)
        evaluator = train_evaluator(shards, ev_path, EvaluatorConfig(window=T, steps=opts.evaluator_steps,
                                                                     seed=opts.seed, device=str(device)))
    if evaluator.cfg.window != T:
        raise SchemaError(ev_path, f"the feature extractor embeds {evaluator.cfg.window}-frame windows, the runs "
                                   f"sample {T}: pass another --evaluator")
    real_features = evaluator.features(real["joints"])
    # 5.
    train_ref = _real_windows(shards, "train", T, opts)
    rng = np.random.default_rng(opts.seed)
    real_row = _metrics(real_features, evaluator.features(train_ref["joints"]),
                        _penetration(real["joints"], real["global_orient"], real["hand_pose"], real["transl"],
                                     real["betas"]),
                        opts.diversity_pairs, rng)
    # 3.
    results: list[RunResult] = []
    for run, model in zip(runs, models):
        preset = preset_of(model)
        res = RunResult(run=str(run), preset=preset, label=LABELS.get(preset, run.name))
        for cond in CONDITIONS:
            per = {m: [] for m in METRICS}
            for r in range(opts.repetitions):
                seed = opts.seed + r
                pick = np.random.default_rng(seed).choice(n_real, opts.samples, replace=opts.samples > n_real)
                ref = controls.Reference(*(torch.as_tensor(real[f][pick], device=device) for f in FIELDS))
                control = (None if cond == "unconditioned" else
                           controls.InBetween(model, ref, opts.keyframes) if cond == "inbetween" else
                           controls.Trajectory(model, ref))
                motion = sample(model, opts.samples, T, opts.ddim_steps, 0.0, seed, control)
                j, go, hp = (x.cpu().numpy() for x in (motion.joints, motion.global_orient, motion.hand_pose))
                m = _metrics(evaluator.features(j), real_features, _penetration(j, go, hp), opts.diversity_pairs,
                             np.random.default_rng(seed))
                for k, v in m.items():
                    per[k].append(v)
            res.conditions[cond] = per
            LOG.info("evaluate: %s %s FID %.3f Diversity %.3f SDF %.2f mm", run.name, cond,
                     np.mean(per["fid"]), np.mean(per["diversity"]), np.mean(per["sdf_mm"]))
        results.append(res)
    # 4.
    summary = {"shards": str(shards), "split": opts.split, "window": T, "real_windows": n_real,
               "evaluator": str(ev_path), "data_hash": data_hash, "options": {
                   f.name: (str(v) if isinstance(v := getattr(opts, f.name), Path) else v)
                   for f in dataclasses.fields(EvaluateOptions)},
               "real": real_row, "runs": [], "seconds": 0.0}
    for res in results:
        entry = {"run": res.run, "preset": res.preset, "label": res.label, "conditions": {}}
        for cond, per in res.conditions.items():
            entry["conditions"][cond] = {k: dict(zip(("mean", "interval"), mean_interval(v))) | {"values": v}
                                         for k, v in per.items()}
        summary["runs"].append(entry)
        flat = {f"{k}_{cond}": entry["conditions"][cond][k]["mean"] for cond in CONDITIONS for k in METRICS}
        atomic_write_text(Path(res.run) / "metrics.json", json.dumps(
            {"evaluated_on": f"{shards} ({opts.split})", **flat}, indent=2) + "\n")
    summary["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "tables.md", tables_markdown(summary))
    return summary


def _cell(x: dict, fmt: str = ".3f") -> str:
    return f"{x['mean']:{fmt}} ± {x['interval']:{fmt}}"


def _sdf(c: dict) -> str:
    return f"{c['sdf_mm']['mean']:.2f} ± {c['sdf_mm']['interval']:.2f} ({100 * c['penetrating_frames']['mean']:.0f}%)"


def tables_markdown(summary: dict) -> str:
    """Tables 2 and 3 of a ``evaluate`` summary, as markdown."""
    real = summary["real"]
    real_cells = f"{real['fid']:.3f} | {real['diversity']:.3f} | {real['sdf_mm']:.2f} ({100 * real['penetrating_frames']:.0f}%)"
    head = ("| method | " + " | ".join(f"{c} FID | {c} Diversity | {c} SDF mm" for c in CONDITIONS) + " |\n"
            + "|---" * (1 + 3 * len(CONDITIONS)) + "|\n")
    lines = [f"Evaluated on the {summary['split']} split of {summary['shards']}: {summary['real_windows']} real "
             f"{summary['window']}-frame windows; mean ± 95% interval over "
             f"{summary['options']['repetitions']} repetitions of {summary['options']['samples']} samples. "
             "SDF: mean penetration depth over the penetrating frames (share of frames).", "",
             "## Table 2: methods and conditions", "", head.rstrip("\n"),
             "| Real | " + " | ".join([real_cells] * len(CONDITIONS)) + " |"]
    table2 = [r for r in summary["runs"] if r["preset"] in ("handdiffuse", "mdm")] or summary["runs"]
    for r in table2:
        lines.append(f"| {r['label']} | " + " | ".join(
            f"{_cell(c['fid'])} | {_cell(c['diversity'])} | {_sdf(c)}"
            for c in (r["conditions"][k] for k in CONDITIONS)) + " |")
    lines += ["", "## Table 3: representation and loss ablations (unconditioned)", "",
              "| variant | FID | Diversity | SDF mm |", "|---|---|---|---|",
              f"| Real | {real_cells} |"]
    by_preset = {r["preset"]: r for r in summary["runs"]}
    for p in TABLE3:
        if p in by_preset:
            c = by_preset[p]["conditions"]["unconditioned"]
            lines.append(f"| {LABELS[p]} | {_cell(c['fid'])} | {_cell(c['diversity'])} | {_sdf(c)} |")
        else:
            lines.append(f"| {LABELS[p]} | (no run) | | |")
    return "\n".join(lines) + "\n"
