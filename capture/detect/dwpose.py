"""DWPose whole-body keypoints through onnxruntime, top-down: images -> hand candidates.

DWPose (Yang et al., "Effective Whole-body Pose Estimation with Two-stages Distillation",
ICCV 2023 workshops) is an RTMPose model distilled on COCO-WholeBody: 133 points, of
which 91-111 are the left hand and 112-132 the right hand, each in our per-hand order
(``data_schemas.keypoints``). It runs in two stages, one ONNX file each, published at
https://huggingface.co/yzd-v/DWPose:

1. YOLOX-L finds people (``yolox_l.onnx``): the image is letterboxed to 640x640
   (``letterbox``), the 8400 anchor-free rows are decoded to boxes (``decode_yolox``)
   and overlapping boxes removed (``nms``).
2. Each person box, padded and widened to the pose input's aspect ratio
   (``box_to_center_scale``), is warped to 288x384 (``crop_transform``, ``warp_crop``).
   The pose model (``dw-ll_ucoco_384.onnx``) outputs SimCC: for every keypoint a 1-D
   distribution over x and one over y, 2 bins per crop pixel; the peaks are the
   keypoint (``decode_simcc``), mapped back to the image (``to_image``).
3. Per image the person whose hands score best gives up to two hand candidates
   (``hand_candidates``): DWPose's left hand with evidence ``+side_logit`` for being
   the left one, its right hand with ``-side_logit``.

A dome camera close to the hands often sees no whole person and YOLOX finds nobody;
``full_frame_fallback`` then runs the pose model on the whole image as one box.

Everything but the ``DWPose`` class is a function on arrays, so each step is tested
alone (``tests/test_dwpose.py``, with tiny ONNX models exported from torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from capture.detect.base import HandCandidate
from data_schemas.errors import SchemaError
from data_schemas.keypoints import COCO_WHOLEBODY_LEFT_HAND, COCO_WHOLEBODY_RIGHT_HAND

WEIGHTS_URL = "https://huggingface.co/yzd-v/DWPose"
DET_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"

DET_INPUT = (640, 640)  # (W, H) YOLOX input, where the ONNX file leaves it dynamic
YOLOX_STRIDES = (8, 16, 32)  # one output grid per stride: 80x80 + 40x40 + 20x20 = 8400 rows
LETTERBOX_FILL = 114  # YOLOX's padding grey
PERSON = 0  # COCO class id

POSE_INPUT = (288, 384)  # (W, H) DWPose's crop, where the ONNX file leaves it dynamic
N_WHOLEBODY = 133
# ImageNet statistics on 0-255 RGB, as RTMPose was trained.
POSE_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


@dataclass
class DWPoseConfig:
    """DWPose (ONNX, onnxruntime): YOLOX person boxes -> 133 whole-body keypoints -> both hands."""

    det_model: Path | None = None
    """YOLOX person detector ONNX (yolox_l.onnx from https://huggingface.co/yzd-v/DWPose)."""
    pose_model: Path | None = None
    """DWPose whole-body ONNX, 133 keypoints (dw-ll_ucoco_384.onnx from https://huggingface.co/yzd-v/DWPose)."""
    device: str = "auto"
    """"auto": CUDA when onnxruntime offers it, else CPU; "cpu"; "cuda" (an error if unavailable)."""
    det_score: float = 0.3
    """Keep person boxes scoring above this (objectness x person-class score)."""
    nms_iou: float = 0.45
    """Drop a person box that overlaps a better one by more than this IoU."""
    box_padding: float = 1.25
    """Grow each person box by this factor before cropping it for the pose model."""
    full_frame_fallback: bool = True
    """With no person box found (a close-up of hands and forearms), run the pose model on the whole image."""
    min_score: float = 0.3
    """Keypoints scoring below this count as not found; a hand with none above it is dropped."""
    side_logit: float = 4.0
    """Log-odds given to DWPose's left/right hand labels (anatomical, but it can swap them; the tracker weighs this)."""
    pose_batch: int = 32
    """Crops per pose-model call (the model's own batch size where its ONNX file fixes one)."""
    threads: int = 0
    """onnxruntime intra-op threads; 0 = onnxruntime's default."""


# -- 1. person detection (YOLOX) ------------------------------------------------------


def letterbox(image: np.ndarray, size: tuple[int, int] = DET_INPUT) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 image -> ((1, 3, size_h, size_w) float32 YOLOX input, scale r).

    The image, scaled by r = min(size_h / H, size_w / W), sits at the top-left of a grey
    canvas, so a letterbox point p is the image point p / r. Channels stay in the order
    they came in (BGR from OpenCV, which is what YOLOX was trained on) and unnormalised.
    """
    W_in, H_in = size
    h, w = image.shape[:2]
    r = min(H_in / h, W_in / w)
    nw, nh = max(1, min(W_in, round(w * r))), max(1, min(H_in, round(h * r)))
    canvas = np.full((H_in, W_in, 3), LETTERBOX_FILL, dtype=np.uint8)
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)  # (H, W, 3) -> (1, 3, H, W)
    return np.ascontiguousarray(blob), r


def yolox_grid(size: tuple[int, int] = DET_INPUT) -> tuple[np.ndarray, np.ndarray]:
    """The cell (gx, gy) (R, 2) and stride (R, 1) of each YOLOX output row.

    Rows go stride by stride (8, 16, 32), each grid row-major: y outer, x inner.
    """
    W_in, H_in = size
    cells, strides = [], []
    for s in YOLOX_STRIDES:
        gy, gx = np.mgrid[0:H_in // s, 0:W_in // s]  # (H/s, W/s) each
        cells.append(np.stack([gx.ravel(), gy.ravel()], axis=1))  # (H/s * W/s, 2)
        strides.append(np.full(gx.size, s))
    return (np.concatenate(cells).astype(np.float32),
            np.concatenate(strides).astype(np.float32)[:, None])


def decode_yolox(rows: np.ndarray, r: float, size: tuple[int, int] = DET_INPUT,
                 det_score: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX rows (R, 5 + C) -> person boxes (K, 4) x1, y1, x2, y2 in image px and scores (K,).

    A row is (dx, dy, log w, log h) in stride units relative to its cell, then objectness
    and C class scores (both already sigmoid-ed in the exported model). A row is a person
    if its best class is person and objectness x that class's score > ``det_score``
    (YOLOX's class-agnostic rule: a box more likely a chair than a person is no person).
    Boxes are not yet de-duplicated: see ``nms``.
    """
    cell, stride = yolox_grid(size)
    if rows.ndim != 2 or rows.shape[0] != cell.shape[0] or rows.shape[1] < 6:
        raise ValueError(f"YOLOX output of shape {rows.shape} for a {size[0]}x{size[1]} input; "
                         f"expected ({cell.shape[0]}, 5 + classes)")
    cls = rows[:, 5:] * rows[:, 4:5]  # (R, C): P(object) P(class | object)
    best = cls.argmax(axis=1)  # (R,)
    score = cls[np.arange(len(cls)), best]  # (R,)
    keep = (best == PERSON) & (score > det_score)
    # Decode only the kept rows: exp() of an unused row's raw size could overflow.
    xy = (rows[keep, :2] + cell[keep]) * stride[keep]  # (K, 2) box centre, letterbox px
    wh = np.exp(rows[keep, 2:4]) * stride[keep]  # (K, 2)
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1) / r  # (K, 4) image px
    return boxes.astype(np.float64), score[keep].astype(np.float64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.45) -> np.ndarray:
    """Greedy non-maximum suppression: indices (K,) of the boxes kept, best first.

    boxes (N, 4) x1, y1, x2, y2; a box is dropped when its IoU with a better kept box
    exceeds ``iou``.
    """
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        lo = np.maximum(boxes[i, :2], boxes[rest, :2])  # (M, 2) intersection top-left
        hi = np.minimum(boxes[i, 2:], boxes[rest, 2:])  # (M, 2) bottom-right
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)  # (M,)
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


# -- 2. pose (RTMPose / DWPose, top-down SimCC) -----------------------------------------


def box_to_center_scale(box: np.ndarray, padding: float = 1.25,
                        aspect: float = POSE_INPUT[0] / POSE_INPUT[1]) -> tuple[np.ndarray, np.ndarray]:
    """Box (4,) x1, y1, x2, y2 -> the crop's centre (2,) and size (2,) w, h in image px.

    The box grows by ``padding`` and then its short side (relative to ``aspect`` = W / H
    of the pose input) grows until w / h = aspect, so the crop is not distorted.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    w, h = (x2 - x1) * padding, (y2 - y1) * padding
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h])


def crop_transform(center: np.ndarray, scale: np.ndarray, size: tuple[int, int] = POSE_INPUT) -> np.ndarray:
    """The (2, 3) affine map image px -> crop px of the crop ``center`` / ``scale`` at ``size`` (W, H).

    The crop's corner (0, 0) is the image point center - scale / 2 and one crop pixel is
    scale / size image pixels (the same on both axes when the aspect ratio is fixed).
    """
    k = np.array(size, dtype=np.float64) / scale  # (2,) crop px per image px
    origin = np.asarray(center, dtype=np.float64) - scale / 2  # (2,) image point at crop (0, 0)
    return np.array([[k[0], 0.0, -k[0] * origin[0]],
                     [0.0, k[1], -k[1] * origin[1]]])


def to_image(xy: np.ndarray, center: np.ndarray, scale: np.ndarray,
             size: tuple[int, int] = POSE_INPUT) -> np.ndarray:
    """Crop px (..., 2) -> image px (..., 2): the inverse of ``crop_transform``."""
    return xy * (scale / np.array(size, dtype=np.float64)) + (center - scale / 2)


def warp_crop(image: np.ndarray, center: np.ndarray, scale: np.ndarray,
              size: tuple[int, int] = POSE_INPUT) -> np.ndarray:
    """(H, W, 3) uint8 BGR image -> (3, size_h, size_w) float32 pose input: the crop, RGB, normalised."""
    crop = cv2.warpAffine(image, crop_transform(center, scale, size), tuple(int(v) for v in size),
                          flags=cv2.INTER_LINEAR)  # (size_h, size_w, 3) BGR; outside the image: 0
    rgb = crop[..., ::-1].astype(np.float32)  # RTMPose was trained on RGB
    return ((rgb - POSE_MEAN) / POSE_STD).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 size: tuple[int, int] = POSE_INPUT) -> tuple[np.ndarray, np.ndarray]:
    """SimCC (N, K, Lx), (N, K, Ly) -> keypoints (N, K, 2) in crop px and scores (N, K).

    Bin i along x is crop x = i / split_ratio, split_ratio = Lx / W (2 for DWPose); the
    score is the smaller of the two peak heights (a point is as sure as its worse axis).
    """
    split_x, split_y = simcc_x.shape[-1] / size[0], simcc_y.shape[-1] / size[1]
    ix, iy = simcc_x.argmax(axis=-1), simcc_y.argmax(axis=-1)  # (N, K) each
    peak_x = np.take_along_axis(simcc_x, ix[..., None], axis=-1)[..., 0]  # (N, K)
    peak_y = np.take_along_axis(simcc_y, iy[..., None], axis=-1)[..., 0]
    xy = np.stack([ix / split_x, iy / split_y], axis=-1)  # (N, K, 2)
    return xy, np.minimum(peak_x, peak_y)


# -- 3. hands of the best person --------------------------------------------------------


def hand_candidates(people: np.ndarray, min_score: float = 0.3, side_logit: float = 4.0) -> list[HandCandidate]:
    """One image's people (P, 133, 3) x, y, score -> up to two candidates: left, then right hand.

    The person whose 42 hand keypoints score best on average is the subject (a dome sees
    one). Keypoints below ``min_score`` get score 0; a hand with none above it is dropped.
    """
    if len(people) == 0:
        return []
    hands = np.concatenate([people[:, COCO_WHOLEBODY_LEFT_HAND], people[:, COCO_WHOLEBODY_RIGHT_HAND]], axis=1)
    subject = people[int(np.argmax(hands[..., 2].mean(axis=1)))]  # (133, 3)
    out = []
    for part, logit in ((COCO_WHOLEBODY_LEFT_HAND, side_logit), (COCO_WHOLEBODY_RIGHT_HAND, -side_logit)):
        kp = subject[part].astype(np.float32)  # (21, 3), our per-hand order
        found = kp[:, 2] >= min_score
        if found.any():
            kp[~found, 2] = 0.0
            out.append(HandCandidate(kp, float(logit)))
    return out


# -- the backend -------------------------------------------------------------------------


class DWPose:
    """``with DWPose(cfg) as det: det.candidates(frames)``: the ``Detector`` on DWPose's ONNX files."""

    def __init__(self, cfg: DWPoseConfig | None = None):
        self.cfg = cfg = cfg or DWPoseConfig()
        det_path = _existing(cfg.det_model, "person detector", DET_FILE, "--dwpose.det-model")
        pose_path = _existing(cfg.pose_model, "whole-body pose model", POSE_FILE, "--dwpose.pose-model")
        providers = _providers(cfg.device)
        self.det_path, self.pose_path = det_path, pose_path
        self.det = _open(det_path, providers, cfg)
        self.pose = _open(pose_path, providers, cfg)
        self.det_size = _check_det(self.det, det_path)
        self.pose_size, self.pose_outputs, fixed_batch = _check_pose(self.pose, pose_path)
        self.pose_batch = fixed_batch or max(1, cfg.pose_batch)
        self.pad_batch = fixed_batch is not None  # a fixed batch is filled up with blank crops
        self.name = f"dwpose-onnx:{pose_path.stem}"

    def person_boxes(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) BGR image -> person boxes (K, 4) x1, y1, x2, y2 in image px, best first."""
        blob, r = letterbox(image, self.det_size)  # (1, 3, 640, 640)
        (out,) = self.det.run(None, {self.det.get_inputs()[0].name: blob})  # (1, R, 85)
        try:
            boxes, scores = decode_yolox(out[0], r, self.det_size, self.cfg.det_score)
        except ValueError as e:
            raise SchemaError(self.det_path, f"not a YOLOX detector: {e}") from e
        return boxes[nms(boxes, scores, self.cfg.nms_iou)]

    def people(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """N x (H, W, 3) BGR images -> N x (P, 133, 3) whole-body keypoints x, y px, score in [0, 1]."""
        cfg, W, H = self.cfg, *self.pose_size
        # 1. Crops: (image index, centre, size) of every person box of every image.
        crops: list[tuple[int, np.ndarray, np.ndarray]] = []
        for i, image in enumerate(frames):
            boxes = self.person_boxes(image)
            padding = cfg.box_padding
            if len(boxes) == 0 and cfg.full_frame_fallback:
                h, w = image.shape[:2]
                # The whole image already holds all the context there is: no padding.
                boxes, padding = np.array([[0.0, 0.0, w, h]]), 1.0
            crops += [(i, *box_to_center_scale(b, padding, W / H)) for b in boxes]

        # 2. The pose model on all crops, a batch at a time.
        xy = np.zeros((len(crops), N_WHOLEBODY, 2))  # crop px
        score = np.zeros((len(crops), N_WHOLEBODY))
        for start in range(0, len(crops), self.pose_batch):
            chunk = crops[start:start + self.pose_batch]
            blob = np.stack([warp_crop(frames[i], c, s, self.pose_size) for i, c, s in chunk])  # (B, 3, H, W)
            if self.pad_batch and len(chunk) < self.pose_batch:
                blob = np.concatenate([blob, np.zeros((self.pose_batch - len(chunk), *blob.shape[1:]), blob.dtype)])
            simcc_x, simcc_y = self.pose.run(self.pose_outputs, {self.pose.get_inputs()[0].name: blob})
            if simcc_x.shape[:2] != (len(blob), N_WHOLEBODY) or simcc_y.shape[:2] != (len(blob), N_WHOLEBODY):
                raise SchemaError(self.pose_path, f"pose model output shapes {simcc_x.shape}, {simcc_y.shape} "
                                  f"for {len(blob)} crops; expected ({len(blob)}, {N_WHOLEBODY}, bins) each")
            xy_b, score_b = decode_simcc(simcc_x, simcc_y, self.pose_size)  # (B, 133, 2), (B, 133)
            xy[start:start + len(chunk)] = xy_b[:len(chunk)]
            score[start:start + len(chunk)] = score_b[:len(chunk)]

        # 3. Back to image px, grouped by image.
        out = [np.zeros((0, N_WHOLEBODY, 3)) for _ in frames]
        per_image: list[list[np.ndarray]] = [[] for _ in frames]
        for k, (i, center, scale) in enumerate(crops):
            pts = to_image(xy[k], center, scale, self.pose_size)  # (133, 2)
            per_image[i].append(np.concatenate([pts, np.clip(score[k], 0.0, 1.0)[:, None]], axis=1))
        for i, persons in enumerate(per_image):
            if persons:
                out[i] = np.stack(persons)  # (P, 133, 3)
        return out

    def candidates(self, frames: list[np.ndarray]) -> list[list[HandCandidate]]:
        """N x (H, W, 3) uint8 BGR images of one camera -> N lists of hand candidates (left, right)."""
        return [hand_candidates(p, self.cfg.min_score, self.cfg.side_logit) for p in self.people(frames)]

    def close(self) -> None:
        self.det = self.pose = None

    def __enter__(self) -> "DWPose":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- loading and checking the ONNX files ----------------------------------------------------


def _existing(path: Path | str | None, what: str, file: str, option: str) -> Path:
    """The model file, or a one-line SchemaError saying which file is missing and where to get it."""
    how = (f"download {DET_FILE} and {POSE_FILE} from {WEIGHTS_URL} and pass {option} /path/to/{file}")
    if path is None:
        raise SchemaError(file, f"DWPose {what} not found ({option} is not set); {how}")
    path = Path(path)
    if not path.is_file():
        raise SchemaError(path, f"DWPose {what} ({file}) not found; {how}")
    return path


def _providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``device``: auto, cpu or cuda."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cpu" or (device == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if device in ("auto", "cuda"):
        if not has_cuda:
            raise SchemaError("--dwpose.device", f"cuda asked for, but onnxruntime {ort.__version__} offers only "
                              f"{', '.join(available)}; install onnxruntime-gpu or use --dwpose.device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise SchemaError("--dwpose.device", f"{device!r} is not one of auto, cpu, cuda")


def _open(path: Path, providers: list[str], cfg: DWPoseConfig):
    """An onnxruntime session on ``path``, or a one-line SchemaError saying why it does not load."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu)") from e
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: its graph-optimisation notes are not ours to act on
    if cfg.threads > 0:
        opts.intra_op_num_threads = cfg.threads
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise SchemaError(path, f"does not load as an ONNX model ({type(e).__name__}: {str(e)[:300]})") from e
    if cfg.device == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
        # onnxruntime falls back to the CPU silently when the CUDA libraries do not load.
        raise SchemaError(path, "onnxruntime could not start CUDA for this model (see its log above); "
                          "check the CUDA/cuDNN libraries or use --dwpose.device cpu")
    return sess


def _static(dim: object) -> int | None:
    """An ONNX dimension as an int, or None where it is dynamic (a name or unknown)."""
    return dim if isinstance(dim, int) and dim > 0 else None


def _check_det(sess, path: Path) -> tuple[int, int]:
    """The detector's input size (W, H) after checking its signature: (1, 3, H, W) -> (1, R, 85)."""
    ins, outs = sess.get_inputs(), sess.get_outputs()
    expected = "expected a YOLOX detector: one float input (1, 3, 640, 640), one output (1, 8400, 85)"
    if len(ins) != 1 or len(outs) != 1 or len(ins[0].shape) != 4 or len(outs[0].shape) != 3:
        raise SchemaError(path, f"{len(ins)} inputs {[i.shape for i in ins]} and {len(outs)} outputs "
                          f"{[o.shape for o in outs]}; {expected}")
    n, c, h, w = (_static(d) for d in ins[0].shape)
    if ins[0].type != "tensor(float)" or n not in (None, 1) or c not in (None, 3):
        raise SchemaError(path, f"input {ins[0].type} {ins[0].shape}; {expected}")
    size = (w or DET_INPUT[0], h or DET_INPUT[1])
    rows, cols = (_static(d) for d in outs[0].shape[1:])
    if any(v % max(YOLOX_STRIDES) for v in size) or (rows not in (None, len(yolox_grid(size)[0]))) \
            or (cols is not None and cols < 6):
        raise SchemaError(path, f"input {ins[0].shape} and output {outs[0].shape} do not match; {expected}")
    return size


def _check_pose(sess, path: Path) -> tuple[tuple[int, int], list[str], int | None]:
    """The pose model's input size (W, H), its output names (x, y) and fixed batch size (or None).

    Signature: (N, 3, 384, 288) -> simcc_x (N, 133, 576), simcc_y (N, 133, 768).
    """
    ins, outs = sess.get_inputs(), sess.get_outputs()
    expected = ("expected a DWPose/RTMPose model: one float input (N, 3, 384, 288), "
                "two outputs simcc_x (N, 133, 576) and simcc_y (N, 133, 768)")
    if len(ins) != 1 or len(outs) != 2 or len(ins[0].shape) != 4 or any(len(o.shape) != 3 for o in outs):
        raise SchemaError(path, f"{len(ins)} inputs {[i.shape for i in ins]} and {len(outs)} outputs "
                          f"{[o.shape for o in outs]}; {expected}")
    n, c, h, w = (_static(d) for d in ins[0].shape)
    if ins[0].type != "tensor(float)" or c not in (None, 3):
        raise SchemaError(path, f"input {ins[0].type} {ins[0].shape}; {expected}")
    if any(_static(o.shape[1]) not in (None, N_WHOLEBODY) for o in outs):
        raise SchemaError(path, f"outputs {[o.shape for o in outs]} are not {N_WHOLEBODY} keypoints; {expected}")
    names = [o.name for o in outs]
    # By name where the file says which is which, else in order (x first, as RTMPose exports).
    order = ["simcc_x", "simcc_y"] if sorted(names) == ["simcc_x", "simcc_y"] else names
    return (w or POSE_INPUT[0], h or POSE_INPUT[1]), order, n
