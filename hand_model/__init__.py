"""The hand model every stage shares: MANO's layer from smplx, and the bundled open hand model in
MANO's file format, with what the stages compute on it.

``model`` (``HandModel``) poses both hands; ``posing`` loads a model once per process
(``hand_model_for``) and poses parameters in batches; ``joints_layer`` is the fit's fast forward
pass (joints, or a detector's landmarks: ``landmarks``, vertex combinations on the surface);
``contact`` measures how deep one hand is in the other and how far apart they are, and
``contact_frames`` is the dataset's contact rule on it; ``raster`` (z-buffer) and ``visibility``
say what a camera sees of two hands; ``draw`` and ``render`` draw them; ``mano_io`` reads
licensed MANO files without chumpy; ``pose_prior`` holds the joint limits; ``mesh_checks``
checks a model's mesh. The open hand model is built by ``generate`` from ``anatomy``
(skeleton), ``surface`` (mesh), ``skinning`` (weights and joint regressor), ``shape_space``
(shapedirs) and ``pose_correctives`` (posedirs).

Imports only ``data_schemas`` of the system's packages.
"""
