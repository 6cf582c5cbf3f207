"""2D to 3D: triangulation (``triangulate``, its compiled kernels and their numpy twin), the hand
model's fit (``fit``, its compiled CPU kernels ``fit_kernels``), the fit's quality, failures and
per-frame confidence (``quality``, ``confidence``), and the two stages (``triangulate_stage``,
``fit_stage``)."""
