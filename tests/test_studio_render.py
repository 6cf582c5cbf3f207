import numpy as np
import pytest

from hand_model.raster import rasterize
from capture.studio.render import (OBJECT_LEFT, OBJECT_NONE, OBJECT_RIGHT, Look, SceneTemplate, forearm_mesh,
                                   key_light_visibility, render_view, vertex_normals)
from capture.studio.scene import view_truth
from data_schemas.calibration import Camera


def quad(x0, y0, x1, y1, z):
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_raster_covers_pixel_centres_and_keeps_the_nearest():
    # two screen-space squares; pixel centres are integer coordinates
    v1, f1 = quad(1.5, 1.5, 5.5, 5.5, 2.0)  # covers columns/rows 2..5
    v2, f2 = quad(3.5, 3.5, 7.5, 7.5, 1.0)  # nearer, covers 4..7
    pix = np.concatenate([v1, v2])[:, :2]
    depth = np.concatenate([v1, v2])[:, 2]
    faces = np.concatenate([f1, f2 + 4])
    frag = rasterize(pix, depth, faces, np.ones(4, bool), (10, 10))
    owner = np.full(100, -1)
    owner[frag.pixel] = frag.face // 2
    owner = owner.reshape(10, 10)
    assert (owner[2:4, 2:6] == 0).all() and (owner[4:6, 2:4] == 0).all()
    assert (owner[4:8, 4:8] == 1).all()  # the nearer square wins where they overlap
    assert (owner == -1).sum() == 100 - 16 - 16 + 4
    d = np.full(100, np.inf)
    d[frag.pixel] = frag.depth
    assert np.allclose(d.reshape(10, 10)[5, 5], 1.0) and np.allclose(d.reshape(10, 10)[2, 2], 2.0)
    assert np.allclose(frag.bary.sum(1), 1)


def test_raster_depth_is_perspective_correct():
    cam = Camera("c", (64, 64), [[50, 0, 32], [0, 50, 32], [0, 0, 1]], np.zeros(5), np.zeros(3), np.zeros(3))
    v = np.array([[-1, -1, 2], [1, -1, 2], [1, 1, 6], [-1, 1, 6]], float)  # a tilted plane
    f = np.array([[0, 1, 2], [0, 2, 3]])
    frag = rasterize(cam.project(v), v[:, 2], f, np.ones(2, bool), cam.size)
    rows, cols = np.divmod(frag.pixel, 64)
    # the plane is z = 4 + 2 y; a pixel ray (x', y') meets it at z = 4 / (1 - 2 y')
    yn = (rows - 32) / 50
    assert np.allclose(frag.depth, 4 / (1 - 2 * yn), rtol=1e-5)


def test_forearm_mesh_is_closed_and_outward():
    import trimesh

    v, f = forearm_mesh()
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_watertight and m.is_winding_consistent and m.volume > 0


def test_shadow_map_shades_what_is_under_an_occluder():
    ground, gf = quad(-0.1, -0.1, 0.1, 0.1, 0.0)
    n = 21  # a finer ground grid so there are vertices under the occluder
    g = np.linspace(-0.1, 0.1, n)
    gx, gy = np.meshgrid(g, g)
    ground = np.stack([gx.ravel(), gy.ravel(), np.zeros(n * n)], 1)
    idx = np.arange(n * n).reshape(n, n)
    gf = np.concatenate([np.stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()], 1),
                         np.stack([idx[:-1, :-1].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()], 1)])
    occ, of = quad(-0.03, -0.03, 0.03, 0.03, 0.05)
    verts = np.concatenate([ground, occ])
    faces = np.concatenate([gf, of + len(ground)])
    lit = key_light_visibility(verts, faces, np.array([0.0, 0.0, 1.0]))
    under = (np.abs(ground[:, 0]) < 0.025) & (np.abs(ground[:, 1]) < 0.025)
    far = (np.abs(ground[:, 0]) > 0.05) | (np.abs(ground[:, 1]) > 0.05)
    assert (lit[:len(ground)][under] == 0).all()
    assert (lit[:len(ground)][far] == 1).all()
    assert (lit[len(ground):] == 1).all()  # the occluder itself is lit


def _two_quads_scene():
    """A far quad (object 'left') half covered by a near quad (object 'right'), facing a camera."""
    back, bf = quad(-0.25, -0.2, 0.25, 0.2, 1.0)  # columns 15..65, rows 10..50
    front, ff = quad(0.0, -0.2, 0.25, 0.2, 0.8)  # columns 40..71
    verts = np.concatenate([back, front])
    faces = np.concatenate([bf, ff + 4])[:, [0, 2, 1]]  # wound to face the camera at the origin (-z side)
    objects = np.array([OBJECT_LEFT] * 2 + [OBJECT_RIGHT] * 2)
    template = SceneTemplate(faces, np.full((8, 3), 0.5), np.ones(8), objects, 4, np.zeros((0, 3)))
    look = Look(np.ones(3) * 0.5, np.ones(3) * 0.5, np.array([0, 0, -1.0]), np.array([0, 0, -1.0]), 1.0, 0.2,
                0.2, 0.1, 0.0, 10.0, np.ones(3) * 0.2)
    cam = Camera("c", (80, 60), [[100, 0, 40], [0, 100, 30], [0, 0, 1]], np.zeros(5), np.zeros(3), np.zeros(3))
    return cam, verts, template, look


def test_render_view_ids_depth_and_visibility():
    cam, verts, template, look = _two_quads_scene()
    assert (np.cross(verts[template.faces[:, 1]] - verts[template.faces[:, 0]],
                     verts[template.faces[:, 2]] - verts[template.faces[:, 0]])[:, 2] < 0).all()
    view = render_view(cam, verts, template, look, np.zeros((60, 80, 3), np.float32), np.random.default_rng(0))
    assert view.image.shape == (60, 80, 3) and view.image.dtype == np.uint8
    assert view.objects[30, 25] == OBJECT_LEFT and view.objects[30, 60] == OBJECT_RIGHT
    assert view.objects[2, 2] == OBJECT_NONE and np.isinf(view.depth[2, 2])
    assert view.depth[30, 60] == pytest.approx(0.8, abs=1e-4)
    assert view.image[30, 25].mean() > 40 and view.image[2, 2].mean() < 10  # lit surface vs black background
    # joints: hand 0 ('left') has one joint behind the near quad, hand 1 in front of everything
    joints = np.zeros((2, 21, 3))
    joints[0] = [-0.05, 0.0, 1.005]
    joints[0, 5] = [0.05, 0.0, 1.005]  # behind the right quad
    joints[1] = [0.05, 0.0, 0.805]
    palm = np.array([[0, 0, 1.0], [0, 0, 1.0]])
    t = view_truth(cam, joints, palm, view)
    assert t.visible[0].sum() == 20 and not t.visible[0, 5] and t.visible[1].all()
    assert not t.unoccluded[0] and t.unoccluded[1]
    # the palm normal is the optical axis; each wrist is seen slightly off it
    assert np.allclose(t.facing_deg, np.degrees(np.arctan2([0.05, 0.05], [1.005, 0.805])))
    assert np.allclose(t.pixels[1, 0], cam.project(joints[1, 0]))


def test_vertex_normals_point_out_of_a_closed_mesh():
    v, f = forearm_mesh()
    n = vertex_normals(v, f)
    radial = v - np.array([0.0, -0.001, -0.001])  # the tube's axis is along x through (y, z) = (-1, -1) mm
    radial[:, 0] = 0
    ring = np.linalg.norm(radial, axis=1) > 0.01  # the tube's rings, not the caps' centre vertices
    assert ((n[ring] * radial[ring]).sum(1) > 0).all()
