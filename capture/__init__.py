"""Cameras to 2D: ChArUco calibration and bundle adjustment (``calibration``), the 2D
hand detectors, re-detection guided by the first fit and the detectors' landmark definitions
(``detect``), and ``studio``, the synthetic capture dome with its ground truth."""
