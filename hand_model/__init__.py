"""Hand models: MANO's layer from smplx, and the bundled open hand model in MANO's file format.

``HandModel`` (model.py) poses both hands; ``mano_io`` reads licensed MANO files without
chumpy; ``pose_prior`` holds the joint limits. The open hand model is built by
``generate`` from ``anatomy`` (skeleton), ``surface`` (mesh), ``skinning`` (weights and
joint regressor), ``shape_space`` (shapedirs) and ``pose_correctives`` (posedirs).
"""
