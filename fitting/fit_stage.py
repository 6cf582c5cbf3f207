"""``handdiffuse fit SESSION`` and ``handdiffuse queue SESSION``: MANO fits and the annotation queue.

fit, per sequence (sequences in parallel on an executor: ``--executor``, ``--workers``; steps 1-3
in the worker, which returns arrays, 4-5 here, so the files do not depend on where it ran):

1. read joints3d.h5 (triangulate), keypoints2d.h5 (detect) and the calibration; undo in
   the 2D keypoints the left/right exchanges the triangulation found; a person's points
   (keypoints2d_manual.h5, from merge) replace the detections there, weighted above them
2. fit both hands (``fitting.fit``)
3. measure the fit and mark failed frames (``fitting.quality``)
4. queue: the failed frames' best views go to annotation/queue.jsonl (this sequence's
   items replaced, other sequences' kept)
5. write sequences/<seq>/mano.h5 with the quality and the inputs' fingerprint, last: a run
   killed between the two writes refits the sequence and replaces its queue items again

queue rebuilds annotation/queue.jsonl from every sequence's mano.h5 (its stored failure
flags), e.g. after changing ``--rule.views-per-frame``.

A sequence's fit runs on ``--threads`` torch threads wherever it runs (the thread count can
change float sums), so its mano.h5 is bit-identical with any executor on the same device.

A sequence whose mano.h5 has the same fingerprint (inputs' names, sizes and mtimes, the
manual points' file included; options; hand model) is skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from data_schemas.errors import SchemaError
from data_schemas.executor import Executor, ExecutorOptions, TaskResources
from data_schemas.h5io import read_if_current
from data_schemas.joints3d import read_joints3d
from data_schemas.keypoints import N_HAND_JOINTS
from data_schemas.keypoints2d import overlay_manual, read_keypoints2d
from data_schemas.lock import writing, writing_all
from data_schemas.mano import ManoFit, read_mano, write_mano
from data_schemas.queue import QueueItem, read_queue, write_queue
from data_schemas.session import (CALIBRATION_TOML, JOINTS3D, KEYPOINTS2D, KEYPOINTS2D_MANUAL, MANO, QUEUE,
                                  SEQUENCE_DIR, Session)
from fitting.fit import FitInputs, FitOptions, fit_sequence
from fitting.quality import QualityRule, choose_views, measure


@dataclass
class FitConfig(ExecutorOptions):
    """Fit both hands' MANO parameters to the joints and keypoints -> mano.h5; queue failed frames."""

    sequences: list[str] = field(default_factory=list)
    """Sequences to fit (default: all with joints3d.h5)."""
    hand_model: Literal["open_hand", "mano"] = "open_hand"
    """Hand model: the bundled open hand model, or your licensed MANO (--mano-dir)."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl (--hand-model mano)."""
    use_2d: bool = True
    """Also fit the 2D detections in every camera (not only the triangulated joints)."""
    workers: int = 1
    """Sequences fitted in parallel (1: in this process); with --executor ray and no --ray-address,
    the CPUs of the local Ray cluster."""
    threads: int = 1
    """Torch threads of one sequence's fit (fixed, so a fit is the same wherever it runs)."""
    task_gpus: float = 1.0
    """--executor ray: the share of a GPU each sequence's fit holds where the cluster has GPUs
    (--options.device cpu: none)."""
    options: FitOptions = field(default_factory=FitOptions)
    rule: QualityRule = field(default_factory=QualityRule)


@dataclass
class FitSummary:
    name: str
    frames: int
    failed_frames: int  # frames with either hand failed
    queued: int  # queue items (views) of this sequence
    reasons: dict[str, int]  # failure reason -> (frame, hand) count
    seconds: float
    skipped: bool = False

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def _file_id(p: Path) -> str:
    st = p.stat()
    return f"{p.name}:{st.st_size}:{st.st_mtime_ns}"


def fingerprint(session: Session, seq: str, cfg: FitConfig) -> str:
    h = hashlib.sha256()
    manual = session.path(KEYPOINTS2D_MANUAL, seq=seq)
    for p in (session.path(JOINTS3D, seq=seq), session.path(KEYPOINTS2D, seq=seq), session.root / CALIBRATION_TOML) \
            + ((manual,) if manual.is_file() else ()):
        h.update(_file_id(p).encode())
    opts = {"options": dataclasses.asdict(cfg.options), "rule": dataclasses.asdict(cfg.rule), "use_2d": cfg.use_2d,
            "model": [cfg.hand_model, str(cfg.mano_dir)]}
    opts["options"].pop("device")
    h.update(json.dumps(opts, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _model(cfg: FitConfig):
    from hand_model.model import HandModel, HandModelConfig

    return HandModel(HandModelConfig(kind=cfg.hand_model, mano_dir=cfg.mano_dir))


def load_inputs(session: Session, seq: str):
    """(joints3d, keypoints2d, the keypoints with exchanged views undone and a person's points
    (keypoints2d_manual.h5) over them, rig in keypoints2d's camera order)."""
    j3d_path, kp_path = session.path(JOINTS3D, seq=seq), session.path(KEYPOINTS2D, seq=seq)
    j3d = read_joints3d(j3d_path)
    kp = read_keypoints2d(kp_path)
    if not np.array_equal(j3d.frames, kp.frames):
        raise SchemaError(j3d_path, f"frames differ from {kp_path.name}'s: run `handdiffuse triangulate` again")
    rig = session.load_calibration()
    missing = [c for c in kp.cameras if c not in rig.names]
    if missing:
        raise SchemaError(session.root / CALIBRATION_TOML, f"camera '{missing[0]}' of {kp_path} is not calibrated")
    rig = rig.subset(kp.cameras, session.root / CALIBRATION_TOML)
    keypoints = kp.keypoints.copy()
    swapped = j3d.swapped  # (F, C) in keypoints2d's camera order, or None
    if swapped is not None:
        if j3d.cameras is not None and list(j3d.cameras) != list(kp.cameras):
            raise SchemaError(j3d_path, f"cameras differ from {kp_path.name}'s: run `handdiffuse triangulate` again")
        for f, c in zip(*np.nonzero(swapped)):
            keypoints[c, f] = np.concatenate([keypoints[c, f, N_HAND_JOINTS:], keypoints[c, f, :N_HAND_JOINTS]])
    manual = session.path(KEYPOINTS2D_MANUAL, seq=seq)  # a person's points (merge): on their true sides
    if manual.is_file():
        keypoints = overlay_manual(keypoints, kp.cameras, kp.frames, read_keypoints2d(manual))
    return j3d, kp, keypoints, rig, swapped


@dataclass
class FittedSequence:
    """A worker's answer for one sequence: the fit and its queue items, written by the caller."""

    seq: str
    fit: ManoFit
    items: list[QueueItem]
    seconds: float


_MODEL: tuple[tuple, object] | None = None  # this process's hand model, kept between sequences


def _cached_model(cfg: FitConfig):
    global _MODEL
    key = (cfg.hand_model, str(cfg.mano_dir))
    if _MODEL is None or _MODEL[0] != key:
        _MODEL = (key, _model(cfg))
    return _MODEL[1]


def fit_one(job: tuple[Path, str, FitConfig, str]) -> FittedSequence:
    """Steps 1-3 for one sequence (root, name, config, inputs' fingerprint); writes nothing. Ray-ready."""
    import torch

    root, seq, cfg, fp = job
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        session = Session.open(root)
        model = _cached_model(cfg)
        # 1.
        j3d, kp, keypoints, rig, swapped = load_inputs(session, seq)
        if not np.isfinite(j3d.joints).any():
            raise SchemaError(session.path(JOINTS3D, seq=seq), "no joint was triangulated in any frame")
        # 2.
        inputs = FitInputs(j3d.joints, keypoints if cfg.use_2d else None, rig if cfg.use_2d else None)
        res = fit_sequence(model, inputs, cfg.options)

        # 3.
        def vertices_of(idx: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                t = [torch.as_tensor(a[idx]) for a in (res.global_orient, res.hand_pose, res.transl)]
                return model(t[0], t[1], torch.as_tensor(res.betas), t[2]).vertices.numpy()

        m = measure(res.joints, j3d.joints, keypoints, rig, cfg.rule, vertices_of, model.faces, swapped)
        fit = ManoFit(j3d.frames, res.global_orient, res.hand_pose, res.betas, res.transl, m.quality, j3d.fps,
                      model.name if cfg.hand_model == "open_hand" else "mano", inputs=fp)
        items = choose_views(m, rig, cfg.rule, seq, j3d.frames, res.joints)  # for step 4
        return FittedSequence(seq, fit, items, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def fit_session(root: str | Path, cfg: FitConfig | None = None, executor: Executor | None = None) -> list[FitSummary]:
    """Fit every sequence with joints3d.h5 (or ``cfg.sequences``); fits run on ``executor`` (default:
    local, ``cfg.workers`` processes; the CLI passes a ``pipeline.executors.RayExecutor`` for --executor ray).
    The sequences' folders are locked while it runs, the annotation folder while the queue is written."""
    cfg = cfg or FitConfig()
    if cfg.threads < 1:
        raise SchemaError(root, "fit needs --threads >= 1")
    session = Session.open(root)
    names = session.select_sequences(cfg.sequences, "fit") if cfg.sequences else \
        [s for s in session.sequences if session.path(JOINTS3D, seq=s).is_file()]
    for s in names:
        if not session.path(JOINTS3D, seq=s).is_file():
            raise SchemaError(session.path(JOINTS3D, seq=s), "file not found: run `handdiffuse triangulate` first")
    if not names:
        raise SchemaError(session.root / "sequences", "no sequence has joints3d.h5: run `handdiffuse triangulate` first")
    with writing_all([session.path(SEQUENCE_DIR, seq=s) for s in names], "fit"):
        return _fit_sequences(session, names, cfg, executor or cfg.local_executor(cfg.workers))


def _fit_sequences(session: Session, names: list[str], cfg: FitConfig, executor: Executor) -> list[FitSummary]:
    summaries: dict[str, FitSummary] = {}
    jobs = []
    for seq in names:
        t0 = time.perf_counter()
        out = session.path(MANO, seq=seq)
        fp = fingerprint(session, seq, cfg)
        if (old := read_if_current(out, read_mano, fp)) is not None:
            queued = [i for i in read_queue(session.root / QUEUE) if i.sequence == seq] \
                if (session.root / QUEUE).is_file() else []
            summaries[seq] = _summary(seq, old, queued, time.perf_counter() - t0, skipped=True)
            continue
        jobs.append((session.root, seq, cfg, fp))
    gpus = 0.0 if cfg.options.device == "cpu" else cfg.task_gpus
    for done in executor.map_unordered(fit_one, jobs, TaskResources(cpus=cfg.threads, gpus=gpus)):
        # 4.
        _replace_queue(session, done.seq, done.items)
        # 5.
        write_mano(session.path(MANO, seq=done.seq), done.fit)
        summaries[done.seq] = _summary(done.seq, done.fit, done.items, done.seconds)
    return [summaries[s] for s in names]


def _summary(seq: str, fit: ManoFit, items: list[QueueItem] | None, seconds: float, skipped: bool = False):
    from data_schemas.mano import FailureReason

    failure = fit.quality.failure
    reasons = {r.name.lower(): int(((failure & r.value) != 0).sum()) for r in FailureReason}
    return FitSummary(seq, len(fit.frames), int((failure != 0).any(1).sum()),
                      len(items) if items is not None else 0, {k: v for k, v in reasons.items() if v}, seconds, skipped)


def _replace_queue(session: Session, seq: str, items: list[QueueItem]) -> None:
    path = session.root / QUEUE
    with writing(path.parent, "fit"):
        kept = [i for i in read_queue(path) if i.sequence != seq] if path.is_file() else []
        merged = sorted(kept + items, key=lambda i: (i.sequence, i.frame, -i.priority, i.camera))
        write_queue(path, merged)


def queue_session(root: str | Path, cfg: FitConfig | None = None) -> list[QueueItem]:
    """Rebuild annotation/queue.jsonl from every sequence's mano.h5 failure flags."""
    import torch

    from fitting.quality import Measures

    cfg = cfg or FitConfig()
    session = Session.open(root)
    chosen = session.select_sequences(cfg.sequences, "queue") if cfg.sequences else session.sequences
    names = [s for s in chosen if session.path(MANO, seq=s).is_file()]
    if not names:
        raise SchemaError(session.root / "sequences", "no sequence has mano.h5: run `handdiffuse fit` first")
    model = _model(cfg)
    items: list[QueueItem] = []
    for seq in names:
        fit = read_mano(session.path(MANO, seq=seq))
        j3d, kp, keypoints, rig, swapped = load_inputs(session, seq)
        with torch.no_grad():
            joints = model(torch.as_tensor(fit.global_orient), torch.as_tensor(fit.hand_pose),
                           torch.as_tensor(fit.betas), torch.as_tensor(fit.transl)).joints.numpy()
        m = measure(joints, j3d.joints, keypoints, rig, cfg.rule, swapped=swapped)
        m = Measures(fit.quality, m.view_error, m.projected)  # the flags the fit stage decided
        items += choose_views(m, rig, cfg.rule, seq, fit.frames, joints)
    items.sort(key=lambda i: (i.sequence, i.frame, -i.priority, i.camera))
    with writing((session.root / QUEUE).parent, "queue"):
        write_queue(session.root / QUEUE, items)
    return items
