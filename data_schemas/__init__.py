"""The contracts between stages: keypoint order, calibration and the camera model it means
(``camera_model``), 2D keypoints, 3D joints, MANO fits, detector landmark definitions
(``landmarks``), the annotation queue, dataset shards with the dataset folder's reader and writer
(``dataset``), the session folder and its takes and videos; and what every writer shares: atomic
writes, locks, path confinement, one ``SchemaError``.

Imports nothing from the other packages of the system.
"""

__version__ = "0.1.0"

from data_schemas.errors import SchemaError  # noqa: E402

__all__ = ["SchemaError", "__version__"]
