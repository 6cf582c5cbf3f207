import numpy as np

from capture.studio.rig import DEMO, FULL, make_rig, ring_layout


def test_presets_see_the_volume():
    for cfg, n in ((FULL, 50), (DEMO, 8)):
        rig, specs = make_rig(cfg)
        assert len(rig) == n and [s.name for s in specs] == rig.names
        # every camera sees a 30 cm cube around the origin, in front of it and inside the image
        corners = np.array([[x, y, z] for x in (-0.15, 0.15) for y in (-0.15, 0.15) for z in (-0.15, 0.15)])
        for cam in rig.cameras:
            assert (cam.to_camera(corners)[:, 2] > 0.3).all()
            uv = cam.project(corners)
            assert (uv >= 0).all() and (uv[:, 0] < cfg.width).all() and (uv[:, 1] < cfg.height).all()
            assert abs(np.linalg.norm(cam.center) - cfg.radius) < 0.05


def test_ring_layout_counts_and_spread():
    layout = ring_layout(50, -15, 75)
    assert len(layout) == 50
    az = np.array([a for a, _ in layout])
    assert np.ptp(np.mod(az, 2 * np.pi)) > np.pi  # all around


def test_same_seed_same_rig():
    a, _ = make_rig(DEMO, seed=3)
    b, _ = make_rig(DEMO, seed=3)
    assert all(np.array_equal(x.matrix, y.matrix) and np.array_equal(x.rotation, y.rotation)
               for x, y in zip(a.cameras, b.cameras))
