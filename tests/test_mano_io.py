"""MANO's licensed pickles (chumpy objects, old scipy paths) load and convert without chumpy.

The licensed files cannot ship with the tests, so a subprocess builds look-alikes: arrays held
by classes that pickle exactly as chumpy's do (``chumpy.ch.Ch``: NEWOBJ + BUILD with
``__dict__`` less ``_parents``/``_cache``; ``shapedirs`` a ``chumpy.reordering.Select`` over a
``Ch``, as in MANO v1.2), ``J_regressor`` a csc matrix pickled under ``scipy.sparse.csc``,
numpy arrays under ``numpy.core.multiarray`` as Python 2 wrote them, and MANO_LEFT's
shapedirs bug. Another fresh interpreter, where ``import chumpy`` fails, reads them.
"""

import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_schemas import SchemaError
from hand_model.mano_io import (
    KEYS, fix_left_shapedirs, load_mano_pair, load_model_pickle, write_model_pickle,
)

REPO = Path(__file__).resolve().parents[1]
V = 30
PARENTS = [2**32 - 1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]  # MANO's kintree_table[0]

BUILD_LICENSED = r'''
import copy, copyreg, pickle, pickletools, sys, types, warnings
from pathlib import Path
import numpy as np
import scipy.sparse as sp

out, V = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)

# chumpy stand-ins, in this process only: same module/class names and pickled state as chumpy 0.70
class Ch:
    def __init__(self, **terms):
        self.__dict__.update(_dirty_vars=set(terms), _itr=None, _parents={}, _cache={"r": None, "drs": {}},
                             _make_dense=False, _make_sparse=False, _depends_on_deps={}, **terms)

    def __getstate__(self):  # chumpy.ch.Ch.__getstate__: a copy of __dict__ less the weakref holders
        state = copy.copy(self.__dict__)
        del state["_parents"], state["_cache"]
        return state

    def __getitem__(self, key):  # as Ch.__getitem__: a Select of flat indices
        picked = np.arange(self.x.size).reshape(self.x.shape)[key]
        return Select(a=self, idxs=picked.ravel(), preferred_shape=picked.shape)

class Select(Ch):
    pass

class add(Ch):
    pass

for mod_name, cls in (("chumpy.ch", Ch), ("chumpy.reordering", Select), ("chumpy.ch_ops", add)):
    mod = sys.modules.setdefault(mod_name, types.ModuleType(mod_name))
    cls.__module__, cls.__qualname__ = mod_name, cls.__name__
    setattr(mod, cls.__name__, cls)
sys.modules["chumpy"] = types.ModuleType("chumpy")
sys.modules["chumpy"].__path__ = []

# J_regressor as scipy 0.x pickled it: class path scipy.sparse.csc, 'format' in the state
sp.csc_matrix.__module__ = "scipy.sparse.csc"

class Py2StylePickler(pickle.Pickler):
    shape_key, protocol_number = "_shape", 2

    def reducer_override(self, obj):
        if isinstance(obj, sp.csc_matrix):
            state = {self.shape_key: obj.shape, "format": "csc", "maxprint": 50,
                     "indptr": obj.indptr, "indices": obj.indices, "data": obj.data}
            if self.protocol_number < 2:
                return copyreg._reconstructor, (type(obj), object, None), state
            return copyreg.__newobj__, (type(obj),), state
        return NotImplemented

def dump(path, model, shape_key, protocol):
    import io
    buf = io.BytesIO()
    pickler = Py2StylePickler(buf, protocol=protocol)
    pickler.shape_key, pickler.protocol_number = shape_key, protocol
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pickler.dump(model)
    data = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(data)
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}

rng = np.random.default_rng(0)
jreg = np.zeros((16, V))
for j in range(16):
    jreg[j, rng.choice(V, 4, replace=False)] = rng.uniform(0.1, 1, 4)
jreg /= jreg.sum(1, keepdims=True)
weights = rng.uniform(0, 1, (V, 16))
weights /= weights.sum(1, keepdims=True)
plain = {
    "v_template": rng.normal(0, 0.05, (V, 3)),
    "shapedirs_full": rng.normal(0, 0.01, (V, 3, 20)),
    "posedirs": rng.normal(0, 0.001, (V, 3, 135)),
    "J_regressor": jreg,
    "weights": weights,
    "kintree_table": np.array([[2**32 - 1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], np.arange(16)]),
    "f": rng.integers(0, V, (2 * V, 3)).astype(np.uint32),
    "hands_components": rng.normal(0, 1, (45, 45)),
    "hands_mean": rng.normal(0, 0.1, 45),
}
left_v = plain["v_template"] * [-1.0, 1.0, 1.0]

def model(v_template):
    return {
        "v_template": Ch(x=v_template),
        "shapedirs": Ch(x=plain["shapedirs_full"])[:, :, :10],  # the same for both hands: the bug
        "posedirs": Ch(x=plain["posedirs"]),
        "J_regressor": sp.csc_matrix(plain["J_regressor"]),
        "weights": plain["weights"], "kintree_table": plain["kintree_table"], "f": plain["f"],
        "hands_components": plain["hands_components"], "hands_mean": plain["hands_mean"],
        "J": jreg @ v_template, "bs_style": "lbs", "bs_type": "lrotmin",
        "v_shaped": add(a=Ch(x=v_template), b=Ch(x=v_template)),  # an extra key chumpy must evaluate
    }

# protocol 2 (NEWOBJ + BUILD) and protocol 0 (copy_reg._reconstructor + BUILD): Python 2 wrote either
globals_right = dump(out / "MANO_RIGHT.pkl", model(plain["v_template"]), "_shape", 2)
globals_left = dump(out / "MANO_LEFT.pkl", model(left_v), "shape", 0)
assert "copy_reg _reconstructor" in globals_left and "copy_reg _reconstructor" not in globals_right
bad = model(plain["v_template"])
bad["shapedirs"] = add(a=Ch(x=plain["shapedirs_full"][:, :, :10]), b=Ch(x=plain["shapedirs_full"][:, :, :10]))
dump(out / "BAD_NODE.pkl", bad, "_shape", 2)
for g in (globals_right, globals_left):
    assert {"chumpy.ch Ch", "chumpy.reordering Select", "chumpy.ch_ops add", "scipy.sparse.csc csc_matrix",
            "numpy.core.multiarray _reconstruct"} <= g, g
    assert not any(n.startswith(("scipy.sparse._", "numpy._core")) for n in g), g
np.savez(out / "expected.npz", left_v_template=left_v, **plain)
'''

CHECK_WITHOUT_CHUMPY = r'''
import sys, warnings
from pathlib import Path
import numpy as np

try:
    import chumpy  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("chumpy is importable here; this test needs an environment without it")

from hand_model.mano_io import KEYS, convert, load_mano_pair

src, out = Path(sys.argv[1]), Path(sys.argv[2])
e = np.load(src / "expected.npz")
sd = e["shapedirs_full"][:, :, :10]
with warnings.catch_warnings():
    warnings.simplefilter("error")  # e.g. scipy's deprecated scipy.sparse.csc must not be touched
    right, left = load_mano_pair(src)
    written = convert(src, out)
assert [p.name for p in written] == ["MANO_RIGHT.pkl", "MANO_LEFT.pkl"], written
assert "chumpy" not in sys.modules

for m in (right, left):
    assert set(KEYS) <= set(m) and "v_shaped" not in m, sorted(m)
    assert all(isinstance(m[k], np.ndarray) for k in KEYS)
    assert m["v_template"].dtype == m["shapedirs"].dtype == m["posedirs"].dtype == np.float64
    assert m["bs_style"] == "lbs" and m["bs_type"] == "lrotmin"
    for k in ("posedirs", "J_regressor", "weights", "kintree_table", "f", "hands_components", "hands_mean"):
        assert np.array_equal(m[k], e[k]) and m[k].dtype == e[k].dtype, k
assert np.array_equal(right["v_template"], e["v_template"])
assert np.array_equal(left["v_template"], e["left_v_template"])
assert np.array_equal(right["shapedirs"], sd)
assert np.array_equal(left["shapedirs"][:, 0], -sd[:, 0]), "left fix not applied"
assert np.array_equal(left["shapedirs"][:, 1:], sd[:, 1:])

import torch, smplx
for name, v_template, shapedirs in (("MANO_RIGHT.pkl", e["v_template"], sd),
                                    ("MANO_LEFT.pkl", e["left_v_template"], left["shapedirs"])):
    mano = smplx.MANO(model_path=out / name, use_pca=False)
    assert mano.is_rhand == (name == "MANO_RIGHT.pkl")
    with torch.no_grad():
        verts = mano(global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45)).vertices
    assert tuple(verts.shape) == (1, len(v_template), 3), verts.shape
    assert np.allclose(mano.shapedirs.numpy(), shapedirs, atol=1e-7)
    flat = smplx.MANO(model_path=out / name, use_pca=False, flat_hand_mean=True)
    betas = torch.linspace(-2, 2, 10)[None]
    with torch.no_grad():
        verts = flat(betas=betas, global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45)).vertices[0]
    assert np.allclose(verts.numpy(), v_template + shapedirs @ betas[0].numpy(), atol=1e-6)
print("ok")
'''


def run_py(code, *args):
    env = dict(os.environ, HANDDIFFUSE_LOG="WARNING")
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def licensed(tmp_path_factory):
    """A folder with chumpy-holding MANO_RIGHT.pkl / MANO_LEFT.pkl (left with the shapedirs bug)."""
    folder = tmp_path_factory.mktemp("licensed")
    run_py(BUILD_LICENSED, folder, V)
    return folder


def test_licensed_pickles_load_and_convert_without_chumpy(licensed, tmp_path):
    r = run_py(CHECK_WITHOUT_CHUMPY, licensed, tmp_path / "out")
    assert r.stdout.splitlines()[-1] == "ok"  # smplx prints warnings before it
    for name in ("MANO_RIGHT.pkl", "MANO_LEFT.pkl"):  # numpy only: no chumpy, no scipy inside
        refs = {arg.split()[0] for op, arg, _ in pickletools.genops((tmp_path / "out" / name).read_bytes())
                if "GLOBAL" in op.name and arg}
        assert refs <= {"numpy._core.multiarray", "numpy", "_codecs"}, refs


def make_model(v=V, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "v_template": rng.normal(0, 0.05, (v, 3)), "shapedirs": rng.normal(0, 0.01, (v, 3, 10)),
        "posedirs": rng.normal(0, 0.001, (v, 3, 135)), "J_regressor": rng.uniform(0, 1, (16, v)),
        "weights": rng.uniform(0, 1, (v, 16)), "kintree_table": np.array([PARENTS, range(16)]),
        "f": rng.integers(0, v, (2 * v, 3)), "hands_components": rng.normal(0, 1, (45, 45)),
        "hands_mean": rng.normal(0, 0.1, 45),
    }


def error_of(fn, *args) -> str:
    with pytest.raises(SchemaError) as e:
        fn(*args)
    return str(e.value)


def test_error_messages(licensed, tmp_path):
    p = tmp_path / "MANO_RIGHT.pkl"
    assert error_of(load_model_pickle, p) == f"{p}: file not found"

    m = make_model()
    del m["posedirs"]
    write_model_pickle(p, m)
    assert error_of(load_model_pickle, p) == f"{p}: missing key 'posedirs'"

    m = make_model()
    m["shapedirs"] = m["shapedirs"][:, :, :5]
    write_model_pickle(p, m)
    assert error_of(load_model_pickle, p) == f"{p}: 'shapedirs' has shape (30, 3, 5), expected (V, 3, >=10) with V=30"

    m = make_model()
    m["f"][3, 1] = V
    write_model_pickle(p, m)
    assert error_of(load_model_pickle, p) == f"{p}: 'f' has vertex indices outside 0..29 (min 0, max 30)"

    p.write_text("v 0 0 0\nf 1 2 3\n")  # a mesh, say
    assert error_of(load_model_pickle, p) == f"{p}: not a MANO-format pickle (UnpicklingError: invalid load key, 'v'.)"

    p.write_bytes(pickle.dumps({"v_template": eval}, protocol=4))  # nothing but model data is loaded
    assert error_of(load_model_pickle, p) == (
        f"{p}: not a MANO-format pickle (it references builtins.eval, which a MANO model does not hold)")

    bad = licensed / "BAD_NODE.pkl"
    assert error_of(load_model_pickle, bad) == (
        f"{bad}: 'shapedirs' is a chumpy.ch_ops.add expression, which cannot be evaluated without chumpy "
        "(this loader evaluates chumpy.ch.Ch and chumpy.reordering.Select)")

    folder = tmp_path / "models"
    write_model_pickle(folder / "MANO_RIGHT.pkl", make_model())
    assert error_of(load_mano_pair, folder) == f"{folder / 'MANO_LEFT.pkl'}: file not found"
    assert error_of(load_mano_pair, tmp_path / "gone") == f"{tmp_path / 'gone'}: folder not found"


def test_fix_left_shapedirs_only_when_left_has_the_right_sign(tmp_path):
    right = make_model()
    mirrored = {**make_model(seed=1), "shapedirs": right["shapedirs"] * [[-1.0], [1.0], [1.0]]}
    before = mirrored["shapedirs"].copy()
    assert fix_left_shapedirs(mirrored, right) is False
    assert np.array_equal(mirrored["shapedirs"], before)

    buggy = {**make_model(seed=1), "shapedirs": right["shapedirs"].copy()}
    assert fix_left_shapedirs(buggy, right) is True
    assert np.array_equal(buggy["shapedirs"], before)
    assert fix_left_shapedirs(buggy, right) is False  # once only

    write_model_pickle(tmp_path / "MANO_RIGHT.pkl", right)  # a folder of already-clean files
    write_model_pickle(tmp_path / "MANO_LEFT.pkl", {**make_model(seed=1), "shapedirs": before})
    r, left = load_mano_pair(tmp_path)
    assert np.array_equal(left["shapedirs"], before) and np.array_equal(r["shapedirs"], right["shapedirs"])
    assert set(KEYS) <= set(left)


def hd(*args):
    env = dict(os.environ, HANDDIFFUSE_LOG="WARNING")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO)


def test_cli_mano_convert(licensed, tmp_path):
    out = tmp_path / "mano"
    r = hd("mano-convert", licensed, out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"wrote {out / 'MANO_RIGHT.pkl'}", f"wrote {out / 'MANO_LEFT.pkl'}"]
    right, left = load_mano_pair(out)  # already fixed: loading again changes nothing
    e = np.load(licensed / "expected.npz")
    assert np.array_equal(left["shapedirs"][:, 0], -e["shapedirs_full"][:, 0, :10])

    r = hd("mano-convert", tmp_path / "gone", out)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'gone'}: folder not found"]

    r = hd("mano-convert", out, out)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: {out}: is the source folder; write the converted files to another folder"]

    r = hd("mano-convert", "--help")
    assert r.returncode == 0 and "Folder with the licensed MANO_RIGHT.pkl and MANO_LEFT.pkl." in r.stdout
