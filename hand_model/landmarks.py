"""A detector's landmarks on the hand model (``data_schemas.landmarks``): which model a definition
refers to, and the definition applied to posed vertices.

    check_definition(definition, model, source)        # SchemaError unless it was fitted on this model
    points = landmark_points(definition, vertices)     # (..., 2, V, 3) -> (..., 2, 21, 3)

The fit poses only the definition's vertices (``hand_model.joints_layer.JointsLayer(model,
landmarks=definition)``); this numpy form is for evaluation and for the fitting procedure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_schemas.errors import SchemaError
from data_schemas.h5io import digest
from data_schemas.landmarks import LandmarkDefinition


def model_fingerprint(model) -> str:
    """What vertex indices mean for ``model`` (a HandModel): its two templates, faces and skinning weights."""
    parts = []
    for h, layer in enumerate((model.left, model.right)):
        parts += [np.round(layer.v_template.detach().cpu().numpy().astype(np.float64), 6),
                  np.asarray(model.faces[h], np.int64),
                  np.round(layer.lbs_weights.detach().cpu().numpy().astype(np.float64), 6)]
    return digest(np.array([digest(p) for p in parts], dtype=object))[:16]


def check_definition(definition: LandmarkDefinition, model, source: str | Path) -> None:
    """SchemaError unless ``definition`` was fitted on ``model``'s vertices."""
    if definition.n_vertices != model.n_vertices or definition.model_fingerprint != model_fingerprint(model):
        raise SchemaError(source, f"landmarks defined on hand model '{definition.hand_model}' "
                                  f"({definition.n_vertices} vertices), not on '{model.name}' ({model.n_vertices}): "
                                  "refit them for this model (make landmarks) or pass --landmarks joints")


def landmark_points(definition: LandmarkDefinition, vertices: np.ndarray) -> np.ndarray:
    """(..., 2, V, 3) posed vertices of both hands -> (..., 2, 21, 3) the detector's landmarks."""
    v = np.asarray(vertices)
    out = []
    for h in range(2):
        picked = v[..., h, definition.vertex_ids[h], :]  # (..., 21, K, 3)
        out.append((picked * definition.weights[h][..., None]).sum(-2))
    return np.stack(out, axis=-3)
