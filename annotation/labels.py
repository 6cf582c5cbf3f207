"""The Label Studio labeling interface of a session's project, and pre-annotations in its result format.

One ``KeyPointLabels`` control over one ``Image``: 42 labels, the keypoint names of
``data_schemas.keypoints`` (``left_wrist`` ... ``right_pinky4``), the left hand's in one
colour and the right hand's in another, so a point dragged onto the wrong hand shows at a
glance. A task's data::

    image  /data/local-files/?d=views/<seq>/<frame>-<cam>.png   the crop (annotation/images/...)
    title  "seq000 frame 120 cam07: left hand (reprojection)"   what to look at
    key    "seq000/000120/cam07"                               the queue item (QueueItem.key)
    crop   [x0, y0, w, h]                                      full-frame pixels (annotation.crops)
    image_size [W, H]                                          the crop image's size, px

A keypoint result (a prediction's or an annotation's), coordinates in percent of the image::

    {"from_name": "kp", "to_name": "image", "type": "keypointlabels",
     "original_width": W, "original_height": H, "image_rotation": 0,
     "value": {"x": 41.2, "y": 63.0, "width": 0.6, "keypointlabels": ["left_wrist"]}}
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

import numpy as np

from annotation.crops import CropBox, inside_percent, to_percent
from data_schemas.keypoints import HANDS, KEYPOINT_NAMES, N_HAND_JOINTS

CONTROL = "kp"  # from_name of every result
OBJECT = "image"  # to_name
RESULT_TYPE = "keypointlabels"
HAND_COLOURS = {"left": "#1f77b4", "right": "#e8590c"}  # blue, orange
POINT_WIDTH = 0.6  # drawn size of a point, percent of the image width
LABEL_INDEX = {name: i for i, name in enumerate(KEYPOINT_NAMES)}


def hand_of(label: str) -> str:
    """'left' or 'right' for a keypoint name."""
    return HANDS[LABEL_INDEX[label] // N_HAND_JOINTS]


def label_config() -> str:
    """The project's labeling configuration (XML)."""
    labels = "\n".join(
        f"    <Label value={quoteattr(name)} background={quoteattr(HAND_COLOURS[hand_of(name)])}/>"
        for name in KEYPOINT_NAMES
    )
    return (
        "<View>\n"
        '  <Header value="$title"/>\n'
        f'  <KeyPointLabels name="{CONTROL}" toName="{OBJECT}" strokeWidth="1" smart="false">\n'
        f"{labels}\n"
        "  </KeyPointLabels>\n"
        f'  <Image name="{OBJECT}" value="$image" zoom="true" zoomControl="true" rotateControl="false"/>\n'
        "</View>\n"
    )


def keypoint_results(guess: np.ndarray, box: CropBox, image_size: tuple[int, int]) -> list[dict]:
    """Pre-annotation results for ``guess`` (42, 2) full-frame px (NaN = no guess): one point per
    label whose guess falls on the crop image."""
    pct = to_percent(guess, box)  # (42, 2)
    ok = inside_percent(pct)
    return [
        {"id": f"guess-{name}", "from_name": CONTROL, "to_name": OBJECT, "type": RESULT_TYPE,
         "original_width": int(image_size[0]), "original_height": int(image_size[1]), "image_rotation": 0,
         "value": {"x": float(pct[j, 0]), "y": float(pct[j, 1]), "width": POINT_WIDTH, "keypointlabels": [name]}}
        for j, name in enumerate(KEYPOINT_NAMES) if ok[j]
    ]
