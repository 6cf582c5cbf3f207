"""``handdiffuse fit SESSION`` and ``handdiffuse queue SESSION``: MANO fits and the annotation queue.

fit, per sequence (sequences in parallel on an executor: ``--executor``, ``--workers``; steps 1-3
in the worker, which returns arrays, 4-5 here, so the files do not depend on where it ran):

1. read joints3d.h5 (triangulate) with its 2D evidence (the hands on their sides, a person's
   points over the detections: resolved once by the triangulate stage) and the calibration
2. fit both hands (``fitting.fit``)
3. measure the fit, flag its frames and give each hand a confidence (``fitting.quality``): a hand
   short of evidence is carried by the fit from its neighbours and trusted less
4. queue: the best views of the frames that stay inconsistent go to annotation/queue.jsonl (this sequence's
   items replaced, other sequences' kept)
5. write sequences/<seq>/mano.h5 with the fitted joints, the quality and the inputs'
   fingerprint, last: a run killed between the two writes refits the sequence and replaces its
   queue items again

queue rebuilds annotation/queue.jsonl from every sequence's mano.h5 (its stored failure
flags, confidence and fitted joints), e.g. after changing ``--rule.views-per-frame``.

A sequence's fit runs on ``--threads`` torch threads wherever it runs (the thread count can
change float sums), so its mano.h5 is bit-identical with any executor on the same device.

The data terms compare the detector's landmarks with the model's landmarks (``--landmarks``: by
default the definition shipped for the detector keypoints2d.h5 names, ``data_schemas.landmarks``;
the joints for a detector without one); mano.h5's joints are the model's skeleton joints.

A sequence whose mano.h5 has the same fingerprint (joints3d.h5's own fingerprint, keypoints2d.h5
and calibration.toml: names, sizes and mtimes; options; hand model; the landmark definition) is
skipped.

``--frames`` (after ``handdiffuse merge``): when mano.h5 was made with these options from the
joints3d.h5 that ``handdiffuse triangulate --frames`` last spliced into, only those frames and the
ones that run triangulated again are fitted, each with ``--context-frames`` neighbours either side
(the temporal terms need them) and the shape kept; their rows are spliced into mano.h5, the
quality measured over the whole sequence as in step 3 and its rows for them replaced, the queue
left as it is; mano.h5 is then current. Otherwise the whole sequence, as without the option.
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

from data_schemas.calibration import CameraRig
from data_schemas.errors import SchemaError
from data_schemas.executor import Executor, ExecutorOptions, TaskResources
from data_schemas.file_id import file_id
from data_schemas.h5io import read_if_current
from data_schemas.joints3d import Joints3D, read_joints3d, read_joints3d_inputs
from data_schemas.keypoints2d import read_detector, read_keypoints2d
from data_schemas.landmarks import LandmarkDefinition, read_landmarks, shipped_definition
from data_schemas.lock import writing, writing_all
from data_schemas.mano import QUALITY_FIELDS, ManoFit, read_mano, write_mano
from data_schemas.queue import QueueItem, read_queue, write_queue
from data_schemas.session import CALIBRATION_TOML, JOINTS3D, KEYPOINTS2D, MANO, QUEUE, SEQUENCE_DIR, Session
from fitting.fit import FitInputs, FitOptions, fit_sequence
from fitting.quality import Measures, QualityRule, ViewRule, choose_views, measure, view_errors


@dataclass
class FitConfig(ExecutorOptions):
    """Fit both hands' MANO parameters to the joints and keypoints -> mano.h5; queue inconsistent frames."""

    sequences: list[str] = field(default_factory=list)
    """Sequences to fit (default: all with joints3d.h5)."""
    frames: list[int] = field(default_factory=list)
    """Only these frames (and those `triangulate --frames` last re-did), spliced into mano.h5, when the
    rest of it is current (default: every frame)."""
    context_frames: int = 3
    """--frames: neighbours either side of each frame fitted with it (temporal terms); only the frames
    themselves are replaced."""
    hand_model: Literal["open_hand", "mano"] = "open_hand"
    """Hand model: the bundled open hand model, or your licensed MANO (--mano-dir)."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl (--hand-model mano)."""
    use_2d: bool = True
    """Also fit the 2D detections in every camera (not only the triangulated joints)."""
    landmarks: str = "auto"
    """What the detector's points are on the hand model: "auto" (the definition shipped for the detector
    keypoints2d.h5 names, capture/detect/landmarks/<detector>.h5; the joints when there is none),
    "joints", or a definition file (make landmarks)."""
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
class QueueConfig:
    """Rebuild annotation/queue.jsonl from every sequence's fit (mano.h5 failure flags)."""

    sequences: list[str] = field(default_factory=list)
    """Sequences to queue (default: all with mano.h5)."""
    landmarks: str = "auto"
    """The detector's landmarks on the hand model, as the fit took them (see `handdiffuse fit --help`)."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl (fits made with --hand-model mano)."""
    rule: ViewRule = field(default_factory=ViewRule)


@dataclass
class FitSummary:
    name: str
    frames: int
    failed_frames: int  # frames with either hand inconsistent (a FailureReason other than the EVIDENCE ones)
    queued: int  # queue items (views) of this sequence
    reasons: dict[str, int]  # failure reason -> (frame, hand) count
    seconds: float
    skipped: bool = False
    spliced: list[int] | None = None  # --frames: the frames replaced (None: the whole sequence)
    fitted: int = 0  # frames fitted (with --frames: context included)
    short_frames: int = 0  # frames with either hand short of evidence (EVIDENCE flags): its neighbours help carry it
    low_confidence_frames: int = 0  # frames with either hand's confidence under the rule's min_confidence

    @property
    def frames_per_s(self) -> float:
        return self.fitted / max(self.seconds, 1e-9)


def fingerprint(session: Session, seq: str, cfg: FitConfig, joints3d_inputs: str | None = None) -> str:
    """What mano.h5 depends on: joints3d.h5 by its own fingerprint (``joints3d_inputs``, default: the
    file's; its size and mtime when it has none), keypoints2d.h5 and calibration.toml (size, mtime),
    the options and the hand model."""
    j3d = session.path(JOINTS3D, seq=seq)
    if joints3d_inputs is None:
        joints3d_inputs = read_joints3d_inputs(j3d)[0]
    h = hashlib.sha256()
    h.update((f"joints3d.h5 of {joints3d_inputs}" if joints3d_inputs else file_id(j3d)).encode())
    for p in (session.path(KEYPOINTS2D, seq=seq), session.root / CALIBRATION_TOML):
        h.update(file_id(p).encode())
    definition = landmark_definition(session, seq, cfg.landmarks)
    opts = {"options": dataclasses.asdict(cfg.options), "rule": dataclasses.asdict(cfg.rule), "use_2d": cfg.use_2d,
            "model": [cfg.hand_model, str(cfg.mano_dir)],
            "landmarks": definition.digest if definition is not None else "joints"}
    opts["options"].pop("device")
    h.update(json.dumps(opts, sort_keys=True).encode())
    return h.hexdigest()[:16]


def landmark_definition(session: Session, seq: str, choice: str) -> LandmarkDefinition | None:
    """``--landmarks`` for one sequence: None (the detections are the joints) or the definition.
    "auto" takes the detector's shipped one, which must have been fitted for that very detector."""
    if choice == "joints":
        return None
    if choice != "auto":
        return read_landmarks(session.root / choice if not Path(choice).is_absolute() else Path(choice))
    kp_path = session.path(KEYPOINTS2D, seq=seq)
    detector = read_detector(kp_path)
    path = shipped_definition(detector)
    if path is None:
        return None
    definition = read_landmarks(path)
    if definition.detector != detector:
        raise SchemaError(kp_path, f"detector '{detector}' has landmarks fitted for '{definition.detector}' only "
                                   f"({path}): refit them (make landmarks) or pass --landmarks joints")
    return definition


def _model(cfg: FitConfig):
    """The hand model of ``cfg``, loaded once per process (``hand_model.posing.hand_model_for``)."""
    from hand_model.posing import hand_model_for

    return hand_model_for(cfg.hand_model, cfg.mano_dir, "--hand-model")


def load_inputs(session: Session, seq: str) -> tuple[Joints3D, np.ndarray, CameraRig]:
    """(joints3d, its 2D evidence (C, F, 42, 3), the rig of the evidence's cameras in their order).
    A joints3d.h5 without evidence (made elsewhere: the studio's ground truth) goes with
    keypoints2d.h5's detections as they are."""
    j3d_path, kp_path = session.path(JOINTS3D, seq=seq), session.path(KEYPOINTS2D, seq=seq)
    j3d = read_joints3d(j3d_path)
    kp = read_keypoints2d(kp_path)
    if not np.array_equal(j3d.frames, kp.frames):
        raise SchemaError(j3d_path, f"frames differ from {kp_path.name}'s: run `handdiffuse triangulate` again")
    if j3d.keypoints is not None and j3d.cameras != kp.cameras:
        raise SchemaError(j3d_path, f"cameras differ from {kp_path.name}'s: run `handdiffuse triangulate` again")
    rig = session.load_calibration()
    missing = [c for c in kp.cameras if c not in rig.names]
    if missing:
        raise SchemaError(session.root / CALIBRATION_TOML, f"camera '{missing[0]}' of {kp_path} is not calibrated")
    rig = rig.subset(kp.cameras, session.root / CALIBRATION_TOML)
    return j3d, (j3d.keypoints if j3d.keypoints is not None else kp.keypoints), rig


def windows(rows: np.ndarray, n_frames: int, context: int) -> list[np.ndarray]:
    """Consecutive runs of frame rows covering each of ``rows`` +- ``context``, inside [0, n_frames)."""
    near = np.zeros(n_frames, bool)
    for r in rows:
        near[max(0, r - context):min(n_frames, r + context + 1)] = True
    idx = np.flatnonzero(near)
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if len(idx) else []


@dataclass
class FittedSequence:
    """A worker's answer for one sequence: the fit and its queue items (None: keep the queue), written
    by the caller."""

    seq: str
    fit: ManoFit
    items: list[QueueItem] | None
    seconds: float
    spliced: list[int] | None = None  # --frames: the frames replaced
    fitted: int = 0  # frames fitted


def fitted_landmarks(model, definition: LandmarkDefinition | None, fit: ManoFit) -> np.ndarray:
    """(F, 2, 21, 3) the fit's landmarks (its joints without a definition), posed from its parameters."""
    F = len(fit.frames)
    if definition is None:
        return fit.joints.reshape(F, 2, -1, 3)
    import torch

    from hand_model.joints_layer import JointsLayer

    layer = JointsLayer(model, landmarks=definition)
    with torch.no_grad():
        t = [torch.as_tensor(a) for a in (fit.global_orient, fit.hand_pose, fit.betas, fit.transl)]
        return layer.landmarks(*t).numpy()


def _vertices_of(model, global_orient: np.ndarray, hand_pose: np.ndarray, betas: np.ndarray, transl: np.ndarray):
    """frame rows -> (K, 2, V, 3) vertices of the fit: the penetration measure's surface."""
    import torch

    def vertices_of(idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = [torch.as_tensor(a[idx]) for a in (global_orient, hand_pose, transl)]
            return model(t[0], t[1], torch.as_tensor(betas), t[2]).vertices.numpy()

    return vertices_of


def fit_one(job: tuple[Path, str, FitConfig, str, bool]) -> FittedSequence:
    """Steps 1-3 for one sequence (root, name, config, inputs' fingerprint, whether to splice
    ``config.frames`` into its mano.h5); writes nothing. Ray-ready."""
    import torch

    root, seq, cfg, fp, splice = job
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        session = Session.open(root)
        model = _model(cfg)
        # 1.
        j3d, keypoints, rig = load_inputs(session, seq)
        definition = _checked_definition(session, seq, cfg.landmarks, model)
        if not np.isfinite(j3d.joints).any():
            raise SchemaError(session.path(JOINTS3D, seq=seq), "no joint was triangulated in any frame")
        if splice:
            return _fit_frames(session, seq, cfg, fp, model, j3d, keypoints, rig, t0, definition)
        # 2.
        inputs = FitInputs(j3d.joints, keypoints if cfg.use_2d else None, rig if cfg.use_2d else None)
        res = fit_sequence(model, inputs, cfg.options, landmarks=definition)
        # 3.
        vertices_of = _vertices_of(model, res.global_orient, res.hand_pose, res.betas, res.transl)
        m = measure(res.joints, j3d.joints, keypoints, rig, cfg.rule, vertices_of, model.faces, j3d.swapped,
                    j3d.fps, fit_landmarks=res.landmarks)
        F = len(j3d.frames)
        fit = ManoFit(j3d.frames, res.global_orient, res.hand_pose, res.betas, res.transl,
                      res.joints.reshape(F, -1, 3), m.quality, j3d.fps,
                      model.name if cfg.hand_model == "open_hand" else "mano", inputs=fp)
        items = choose_views(m, rig, cfg.rule, seq, j3d.frames, res.joints)  # for step 4
        return FittedSequence(seq, fit, items, time.perf_counter() - t0, fitted=F)
    finally:
        torch.set_num_threads(threads)


def _checked_definition(session: Session, seq: str, choice: str, model) -> LandmarkDefinition | None:
    """``landmark_definition``, refused unless it was fitted on ``model``'s vertices."""
    from hand_model.landmarks import check_definition

    definition = landmark_definition(session, seq, choice)
    if definition is not None:
        check_definition(definition, model, f"--landmarks {choice}")
    return definition


def _fit_frames(session: Session, seq: str, cfg: FitConfig, fp: str, model, j3d: Joints3D, keypoints: np.ndarray,
                rig: CameraRig, t0: float, definition: LandmarkDefinition | None) -> FittedSequence:
    """--frames: steps 2-3 on ``cfg.frames`` and the frames the triangulation last spliced, spliced
    into the sequence's mano.h5 (``_splice_rows`` said it can be)."""
    fit = read_mano(session.path(MANO, seq=seq))
    row = {int(f): i for i, f in enumerate(j3d.frames)}
    missing = [f for f in cfg.frames if f not in row]
    if missing:
        raise SchemaError(session.path(JOINTS3D, seq=seq), f"--frames: frame {missing[0]} is not a frame of {seq}")
    again = set(cfg.frames) | {int(f) for f in (j3d.spliced if j3d.spliced is not None else [])}
    A = np.array(sorted(row[f] for f in again))
    F = len(j3d.frames)
    joints = fit.joints.reshape(F, 2, -1, 3)  # (F, 2, 21, 3)
    points = fitted_landmarks(model, definition, fit)  # (F, 2, 21, 3)
    # 2. windows of context around the frames, the shape kept; only the frames themselves replaced
    fitted = 0
    for run in windows(A, F, cfg.context_frames):
        inputs = FitInputs(j3d.joints[run], keypoints[:, run] if cfg.use_2d else None, rig if cfg.use_2d else None)
        res = fit_sequence(model, inputs, cfg.options, betas=fit.betas, landmarks=definition)
        keep = np.isin(run, A)
        for name in ("global_orient", "hand_pose", "transl"):
            getattr(fit, name)[run[keep]] = getattr(res, name)[keep]
        joints[run[keep]] = res.joints[keep]
        points[run[keep]] = res.landmarks[keep]
        fitted += len(run)
    # 3. the quality over the whole sequence (thresholds relative to it); the frames' rows replaced
    vertices_of = _vertices_of(model, fit.global_orient, fit.hand_pose, fit.betas, fit.transl)
    m = measure(joints, j3d.joints, keypoints, rig, cfg.rule, vertices_of, model.faces, j3d.swapped, j3d.fps,
                fit_landmarks=points)
    for name in QUALITY_FIELDS:
        getattr(fit.quality, name)[A] = getattr(m.quality, name)[A]
    fit.joints = joints.reshape(F, -1, 3)
    fit.inputs = fp
    return FittedSequence(seq, fit, None, time.perf_counter() - t0, [int(j3d.frames[a]) for a in A], fitted)


def fit_session(root: str | Path, cfg: FitConfig | None = None, executor: Executor | None = None) -> list[FitSummary]:
    """Fit every sequence with joints3d.h5 (or ``cfg.sequences``); fits run on ``executor`` (default:
    local, ``cfg.workers`` processes; the CLI passes a ``pipeline.executors.RayExecutor`` for --executor ray).
    The sequences' folders are locked while it runs, the annotation folder while the queue is written."""
    cfg = cfg or FitConfig()
    if cfg.threads < 1:
        raise SchemaError(root, "fit needs --threads >= 1")
    if cfg.context_frames < 0:
        raise SchemaError(root, "fit needs --context-frames >= 0")
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


def _splice_rows(session: Session, seq: str, cfg: FitConfig, out: Path) -> bool:
    """--frames: whether mano.h5 is current apart from the frames the triangulation last spliced: made
    with these options from joints3d.h5 as it was before that splice, at the same frames."""
    if not cfg.frames:
        return False
    spliced_from = read_joints3d_inputs(session.path(JOINTS3D, seq=seq))[1]
    if not spliced_from:
        return False
    return read_if_current(out, read_mano, fingerprint(session, seq, cfg, spliced_from)) is not None


def _fit_sequences(session: Session, names: list[str], cfg: FitConfig, executor: Executor) -> list[FitSummary]:
    summaries: dict[str, FitSummary] = {}
    jobs = []
    for seq in names:
        t0 = time.perf_counter()
        out = session.path(MANO, seq=seq)
        fp = fingerprint(session, seq, cfg)
        if (old := read_if_current(out, read_mano, fp)) is not None:
            summaries[seq] = _summary(seq, old, _queued(session, seq), time.perf_counter() - t0,
                                      cfg.rule.min_confidence, skipped=True)
            continue
        jobs.append((session.root, seq, cfg, fp, _splice_rows(session, seq, cfg, out)))
    gpus = 0.0 if cfg.options.device == "cpu" else cfg.task_gpus
    for done in executor.map_unordered(fit_one, jobs, TaskResources(cpus=cfg.threads, gpus=gpus)):
        # 4.
        if done.items is not None:
            _replace_queue(session, done.seq, done.items)
        # 5.
        write_mano(session.path(MANO, seq=done.seq), done.fit)
        items = done.items if done.items is not None else _queued(session, done.seq)
        summaries[done.seq] = _summary(done.seq, done.fit, items, done.seconds, cfg.rule.min_confidence,
                                       spliced=done.spliced,
                                       fitted=done.fitted)
    return [summaries[s] for s in names]


def _queued(session: Session, seq: str) -> list[QueueItem]:
    path = session.root / QUEUE
    return [i for i in read_queue(path) if i.sequence == seq] if path.is_file() else []


def _summary(seq: str, fit: ManoFit, items: list[QueueItem] | None, seconds: float, min_confidence: float,
             skipped: bool = False, spliced: list[int] | None = None, fitted: int = 0) -> FitSummary:
    from data_schemas.mano import EVIDENCE, FailureReason

    q = fit.quality
    reasons = {r.name.lower(): int(((q.failure & r.value) != 0).sum()) for r in FailureReason}
    return FitSummary(seq, len(fit.frames), int(q.inconsistent.any(1).sum()),
                      len(items) if items is not None else 0, {k: v for k, v in reasons.items() if v}, seconds,
                      skipped, spliced, fitted, int(((q.failure & EVIDENCE) != 0).any(1).sum()),
                      int((q.confidence < min_confidence).any(1).sum()))


def _replace_queue(session: Session, seq: str, items: list[QueueItem]) -> None:
    path = session.root / QUEUE
    with writing(path.parent, "fit"):
        kept = [i for i in read_queue(path) if i.sequence != seq] if path.is_file() else []
        merged = sorted(kept + items, key=lambda i: (i.sequence, i.frame, -i.priority, i.camera))
        write_queue(path, merged)


def queue_session(root: str | Path, cfg: QueueConfig | None = None) -> list[QueueItem]:
    """Rebuild annotation/queue.jsonl from every sequence's mano.h5: its failure flags and fitted joints."""
    cfg = cfg or QueueConfig()
    session = Session.open(root)
    chosen = session.select_sequences(cfg.sequences, "queue") if cfg.sequences else session.sequences
    names = [s for s in chosen if session.path(MANO, seq=s).is_file()]
    if not names:
        raise SchemaError(session.root / "sequences", "no sequence has mano.h5: run `handdiffuse fit` first")
    items: list[QueueItem] = []
    for seq in names:
        fit = read_mano(session.path(MANO, seq=seq))
        j3d, keypoints, rig = load_inputs(session, seq)
        definition = landmark_definition(session, seq, cfg.landmarks)
        if definition is not None:
            from hand_model.posing import hand_model_for

            model = hand_model_for("mano" if fit.hand_model == "mano" else "open_hand", cfg.mano_dir,
                                   session.path(MANO, seq=seq))
            points = fitted_landmarks(model, definition, fit)
        else:
            points = fit.joints.reshape(len(fit.frames), 2, -1, 3)
        if not np.array_equal(fit.frames, j3d.frames):
            raise SchemaError(session.path(MANO, seq=seq), "frames differ from joints3d.h5's: run `handdiffuse fit` "
                                                           "again")
        joints = fit.joints.reshape(len(fit.frames), 2, -1, 3)  # (F, 2, 21, 3)
        view_error, projected = view_errors(points, keypoints, rig)
        m = Measures(fit.quality, view_error, projected)  # the flags the fit stage decided
        items += choose_views(m, rig, cfg.rule, seq, fit.frames, joints)
    items.sort(key=lambda i: (i.sequence, i.frame, -i.priority, i.camera))
    with writing((session.root / QUEUE).parent, "queue"):
        write_queue(session.root / QUEUE, items)
    return items
