"""DWPose's pre- and post-processing (capture/detect/dwpose.py), without DWPose's weights.

The two ONNX files are stood in for by tiny torch modules exported to ONNX with the same
input/output signature, whose outputs are constants: the fake YOLOX reports one person
box at a known letterbox position, the fake pose model puts SimCC peaks at known bins.
The decoded hand keypoints must land at the image pixels those numbers mean, computed
here independently of the module (box -> centre/size -> crop px -> image px).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from capture.detect.base import to_rows
from data_schemas.errors import SchemaError

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from capture.detect.dwpose import (  # noqa: E402  (after the importorskips)
    DWPose, DWPoseConfig, box_to_center_scale, crop_transform, decode_simcc, decode_yolox,
    hand_candidates, letterbox, nms, to_image, warp_crop,
)

POSE_W, POSE_H = 288, 384  # DWPose's crop
SPLIT = 2  # SimCC bins per crop pixel
LB_BOX = np.array([70.0, 50.0, 270.0, 350.0])  # the fake person, letterbox px (640x640)
# Its centre (170, 200) is in cell (5, 6) of the stride-32 grid, after the 80x80 and 40x40 grids.
STRIDE, GX, GY = 32, 5, 6
PERSON_ROW = 80 * 80 + 40 * 40 + GY * 20 + GX

# Crop px of each hand keypoint k the fake pose model reports, and the peak heights.
LEFT_CROP = np.array([[40 + 5 * k, 100 + 8 * k] for k in range(21)], dtype=float)
RIGHT_CROP = np.array([[250 - 5 * k, 100 + 8 * k] for k in range(21)], dtype=float)
LEFT_PEAK, RIGHT_PEAK_X, RIGHT_PEAK_Y, LOW_PEAK = 0.9, 0.8, 0.7, 0.2  # left keypoint 20 peaks LOW


# -- the fake models --------------------------------------------------------------------------


class Constant(torch.nn.Module):
    """(N, 3, H, W) -> the given constant arrays, each repeated over N."""

    def __init__(self, *outputs: np.ndarray):
        super().__init__()
        for i, out in enumerate(outputs):
            self.register_buffer(f"out{i}", torch.from_numpy(out))
        self.n = len(outputs)

    def forward(self, x):
        zero = 0 * x.mean(dim=(1, 2, 3))  # (N,): keeps the input in the graph, gives the batch axis
        return tuple(getattr(self, f"out{i}")[None] + zero[:, None, None] for i in range(self.n))


def export(module, shape, path, output_names, dynamic_batch):
    dynamic = {name: {0: "n"} for name in ["input", *output_names]} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its removal
        torch.onnx.export(module, (torch.zeros(shape),), str(path), dynamo=False, input_names=["input"],
                          output_names=output_names, dynamic_axes=dynamic)
    return path


def yolox_rows(person: bool = True) -> np.ndarray:
    """(8400, 85) raw YOLOX output: one person at LB_BOX (encoding inverted by hand), or nobody."""
    rows = np.zeros((8400, 85), dtype=np.float32)
    rows[:, 5:] = 0.01  # every class unlikely, objectness 0
    if person:
        cx, cy = (LB_BOX[0] + LB_BOX[2]) / 2, (LB_BOX[1] + LB_BOX[3]) / 2
        w, h = LB_BOX[2] - LB_BOX[0], LB_BOX[3] - LB_BOX[1]
        rows[PERSON_ROW, :4] = cx / STRIDE - GX, cy / STRIDE - GY, math.log(w / STRIDE), math.log(h / STRIDE)
        rows[PERSON_ROW, 4] = 0.95  # objectness
        rows[PERSON_ROW, 5] = 0.9  # class 0: person
    return rows


def simcc() -> tuple[np.ndarray, np.ndarray]:
    """(133, 576), (133, 768) SimCC with a peak at each hand keypoint's bin; body points near 0."""
    x = np.zeros((133, POSE_W * SPLIT), dtype=np.float32)
    y = np.zeros((133, POSE_H * SPLIT), dtype=np.float32)
    x[:, 0] = y[:, 0] = 0.05
    for k in range(21):
        lx, ly = (LEFT_CROP[k] * SPLIT).astype(int)
        rx, ry = (RIGHT_CROP[k] * SPLIT).astype(int)
        x[91 + k, lx] = y[91 + k, ly] = LEFT_PEAK if k < 20 else LOW_PEAK
        x[112 + k, rx], y[112 + k, ry] = RIGHT_PEAK_X, RIGHT_PEAK_Y
    x[91, 80], y[91, 200] = 1.5, 1.3  # the left wrist peaks above 1: its score is clipped to 1
    return x, y


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("dwpose")
    sx, sy = simcc()
    return {
        "det": export(Constant(yolox_rows()), (1, 3, 640, 640), d / "yolox_fake.onnx", ["output"], False),
        "det_nobody": export(Constant(yolox_rows(person=False)), (1, 3, 640, 640), d / "yolox_nobody.onnx",
                             ["output"], False),
        "pose": export(Constant(sx, sy), (1, 3, POSE_H, POSE_W), d / "dw-fake.onnx", ["simcc_x", "simcc_y"], True),
        "pose_batch1": export(Constant(sx, sy), (1, 3, POSE_H, POSE_W), d / "dw-fake-b1.onnx",
                              ["simcc_x", "simcc_y"], False),
    }


def expected_pixels(box: np.ndarray, padding: float, crop_xy: np.ndarray) -> np.ndarray:
    """Crop px -> image px for a crop of ``box``: pixel = center - scale/2 + crop * scale / input size."""
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    w, h = (box[2] - box[0]) * padding, (box[3] - box[1]) * padding
    if w / h > POSE_W / POSE_H:
        h = w * POSE_H / POSE_W
    else:
        w = h * POSE_W / POSE_H
    scale = np.array([w, h])
    return center - scale / 2 + crop_xy * scale / np.array([POSE_W, POSE_H])


def image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- the whole backend on the fake models --------------------------------------------------------


@pytest.mark.parametrize("pose", ["pose", "pose_batch1"])
def test_hands_land_where_the_peaks_say(models, pose):
    cfg = DWPoseConfig(det_model=models["det"], pose_model=models[pose], device="cpu")
    frames = [image(720, 1280), image(960, 480)]  # landscape and portrait, in one batch
    with DWPose(cfg) as det:
        assert det.name == f"dwpose-onnx:{models[pose].stem}"
        per_image = det.candidates(frames)
    for frame, cands in zip(frames, per_image):
        h, w = frame.shape[:2]
        box = LB_BOX / min(640 / h, 640 / w)  # letterbox px -> image px
        assert len(cands) == 2
        left, right = cands
        assert left.left_logit == 4.0 and right.left_logit == -4.0
        assert left.keypoints.shape == right.keypoints.shape == (21, 3)
        np.testing.assert_allclose(left.keypoints[:20, :2], expected_pixels(box, 1.25, LEFT_CROP)[:20], atol=1e-3)
        np.testing.assert_allclose(right.keypoints[:, :2], expected_pixels(box, 1.25, RIGHT_CROP), atol=1e-3)
        # Scores: min of the two peaks, clipped to 1; below min_score (0.3) -> 0.
        np.testing.assert_allclose(left.keypoints[:, 2], [1.0] + [LEFT_PEAK] * 19 + [0.0], atol=1e-6)
        np.testing.assert_allclose(right.keypoints[:, 2], RIGHT_PEAK_Y, atol=1e-6)
    rows = to_rows(per_image)  # (2, 42, 3): the left hand's low-score point is NaN there
    assert rows.shape == (2, 42, 3) and np.isnan(rows[:, 20, :2]).all() and not np.isnan(rows[:, 21:, :2]).any()


def test_full_frame_fallback(models):
    cfg = DWPoseConfig(det_model=models["det_nobody"], pose_model=models["pose"], device="cpu")
    frame = image(720, 1280)
    with DWPose(cfg) as det:
        assert len(det.person_boxes(frame)) == 0
        left, right = det.candidates([frame])[0]
    whole = np.array([0.0, 0.0, 1280.0, 720.0])  # the whole image, not padded
    np.testing.assert_allclose(left.keypoints[:20, :2], expected_pixels(whole, 1.0, LEFT_CROP)[:20], atol=1e-3)
    np.testing.assert_allclose(right.keypoints[:, :2], expected_pixels(whole, 1.0, RIGHT_CROP), atol=1e-3)

    cfg.full_frame_fallback = False
    with DWPose(cfg) as det:
        assert det.candidates([frame, frame]) == [[], []]


# -- errors ---------------------------------------------------------------------------------------


def test_missing_weights(models, tmp_path):
    with pytest.raises(SchemaError) as e:
        DWPose(DWPoseConfig())
    assert str(e.value) == (
        "yolox_l.onnx: DWPose person detector not found (--dwpose.det-model is not set); download "
        "yolox_l.onnx and dw-ll_ucoco_384.onnx from https://huggingface.co/yzd-v/DWPose and pass "
        "--dwpose.det-model /path/to/yolox_l.onnx")

    missing = tmp_path / "nowhere" / "dw-ll_ucoco_384.onnx"
    with pytest.raises(SchemaError) as e:
        DWPose(DWPoseConfig(det_model=models["det"], pose_model=missing))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{missing}: DWPose whole-body pose model (dw-ll_ucoco_384.onnx) not found; ")
    assert "https://huggingface.co/yzd-v/DWPose" in msg and "--dwpose.pose-model" in msg


def test_bad_model_files(models, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(SchemaError, match="junk.onnx: does not load as an ONNX model") as e:
        DWPose(DWPoseConfig(det_model=junk, pose_model=models["pose"], device="cpu"))
    assert "\n" not in str(e.value)
    with pytest.raises(SchemaError, match="expected a YOLOX detector"):
        DWPose(DWPoseConfig(det_model=models["pose"], pose_model=models["pose"], device="cpu"))
    with pytest.raises(SchemaError, match="expected a DWPose/RTMPose model"):
        DWPose(DWPoseConfig(det_model=models["det"], pose_model=models["det"], device="cpu"))
    with pytest.raises(SchemaError, match="--dwpose.device: 'gpu' is not one of auto, cpu, cuda"):
        DWPose(DWPoseConfig(det_model=models["det"], pose_model=models["pose"], device="gpu"))


# -- the steps on tiny arrays ---------------------------------------------------------------------


def test_letterbox():
    img = np.zeros((10, 20, 3), dtype=np.uint8)
    img[...] = (10, 20, 30)  # B, G, R
    blob, r = letterbox(img, (64, 64))
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32 and r == pytest.approx(3.2)
    np.testing.assert_array_equal(blob[0, :, :32, :], np.array([10, 20, 30])[:, None, None] * np.ones((32, 64)))
    assert (blob[0, :, 32:, :] == 114).all()  # the canvas below the 64x32 image


def test_decode_yolox():
    # A 64x64 input: 8x8 + 4x4 + 2x2 = 84 rows, 2 classes.
    rows = np.zeros((84, 7), dtype=np.float32)
    person = 64 + 1 * 4 + 2  # stride 16, cell (2, 1)
    rows[person] = [0.5, 0.25, math.log(2), 0.0, 0.9, 0.8, 0.1]  # centre (40, 20), 32 x 16
    rows[0] = [0, 0, 0, 0, 0.9, 0.6, 0.7]  # more likely class 1: not a person
    rows[1] = [0, 0, 0, 0, 0.5, 0.5, 0.0]  # a person scoring 0.25 < 0.3
    boxes, scores = decode_yolox(rows, 0.5, (64, 64), det_score=0.3)
    np.testing.assert_allclose(boxes, [[48, 24, 112, 56]], atol=1e-5)  # letterbox (24, 12, 56, 28) / 0.5
    np.testing.assert_allclose(scores, [0.72], atol=1e-6)
    with pytest.raises(ValueError, match="expected \\(84, 5 \\+ classes\\)"):
        decode_yolox(rows[:80], 0.5, (64, 64))


def test_nms():
    boxes = np.array([[1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    scores = np.array([0.8, 0.7, 0.9])
    np.testing.assert_array_equal(nms(boxes, scores, 0.45), [2, 1])  # IoU(0, 2) = 81 / 119 = 0.68
    np.testing.assert_array_equal(nms(boxes, scores, 0.7), [2, 0, 1])
    assert nms(np.zeros((0, 4)), np.zeros(0)).shape == (0,)


def test_decode_simcc():
    sx = np.zeros((1, 2, 8))  # crop width 4, 2 bins per px
    sy = np.zeros((1, 2, 6))  # crop height 3
    sx[0, 0, 5], sy[0, 0, 3] = 0.9, 0.4
    sx[0, 1, 1], sy[0, 1, 4] = 0.3, 0.8
    xy, score = decode_simcc(sx, sy, (4, 3))
    np.testing.assert_allclose(xy, [[[2.5, 1.5], [0.5, 2.0]]])
    np.testing.assert_allclose(score, [[0.4, 0.3]])


def test_center_scale_and_crop_round_trip():
    center, scale = box_to_center_scale(np.array([0, 0, 30, 200]), 1.0, 0.75)  # tall: widened
    np.testing.assert_allclose(center, [15, 100])
    np.testing.assert_allclose(scale, [150, 200])
    _, scale = box_to_center_scale(np.array([0, 0, 300, 100]), 1.25, 0.75)  # wide: heightened
    np.testing.assert_allclose(scale, [375, 500])

    # One crop px per image px: the crop is the image shifted by center - scale / 2 = (176, 48).
    center, scale = np.array([320.0, 240.0]), np.array([288.0, 384.0])
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[200, 300] = (0, 0, 255)  # a red dot (BGR) at image (300, 200)
    crop = warp_crop(frame, center, scale)  # (3, 384, 288), RGB, normalised
    assert crop.shape == (3, 384, 288)
    assert np.unravel_index(np.argmax(crop[0]), crop[0].shape) == (152, 124)  # red is channel 0 now
    assert crop[0, 152, 124] == pytest.approx((255 - 123.675) / 58.395)
    M = crop_transform(np.array([100.0, 50.0]), np.array([90.0, 120.0]))
    pts = np.array([[3.0, 4.0], [200.0, -7.0]])
    back = to_image(pts @ M[:, :2].T + M[:, 2], np.array([100.0, 50.0]), np.array([90.0, 120.0]))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_hand_candidates_pick_the_subject():
    people = np.zeros((2, 133, 3))
    people[0, 91:133, 2] = 0.4
    people[1, 91:112, 2] = 0.9  # person 1: a sure left hand, no right hand
    people[1, 91:112, 0] = 7.0
    (left,) = hand_candidates(people, min_score=0.3, side_logit=2.0)
    assert left.left_logit == 2.0 and (left.keypoints[:, 0] == 7.0).all()
    assert hand_candidates(np.zeros((0, 133, 3))) == []
