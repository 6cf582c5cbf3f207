"""The contracts between stages: keypoint order, calibration and the camera model it means
(``camera_model``), 2D keypoints, 3D joints, MANO fits, the annotation queue, dataset shards
and the session folder.

Imports nothing from the other packages of the system.
"""

__version__ = "0.1.0"

from data_schemas.errors import SchemaError  # noqa: E402

__all__ = ["SchemaError", "__version__"]
