"""HandDiffuse, the generator: motion representations (``representation``), the denoisers SHDe and
IHDe (``denoiser``, ``model``), diffusion and DDIM (``diffusion``, ``sample``), the interaction and
penetration losses (``losses``, ``penetration``), controls (``controls``), training on the dataset's
windows (``train``, ``data``), decoded outputs (``output``), and evaluation: the feature extractor
(``motion_features``), metrics and the paper's tables (``metrics``, ``evaluate``)."""
