"""Read MANO's licensed model pickles without chumpy; write clean numpy-only copies.

MANO's files (``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl``, v1.2) are Python-2 pickles that hold
objects of ``chumpy``, which does not import on Python 3.11 (it imports names that numpy
removed, and ``inspect.getargspec``). A chumpy node has no ``__reduce__``: it pickles as
``copyreg.__newobj__(cls)`` (opcode NEWOBJ, class by its module path) followed by BUILD with
``Ch.__getstate__()``, which is a copy of the instance ``__dict__`` less ``_parents`` and
``_cache``. For a plain ``chumpy.ch.Ch`` that dict is::

    {'x': <ndarray>, '_dirty_vars': set(...), '_itr': None, '_depends_on_deps': {},
     '_make_dense': False, '_make_sparse': False}

and its value is ``x`` (``Ch.compute_r`` returns ``self.x``). Derived nodes keep their inputs
under their term names instead; the one MANO's files hold is ``chumpy.reordering.Select``
(``shapedirs`` is ``Ch(x=(778, 3, 20))[:, :, :10]``, and ``Ch.__getitem__`` builds a Select):
state ``{'a': <Ch>, 'idxs': <int ndarray>, 'preferred_shape': (778, 3, 10), ...}``, value
``a.r.ravel()[idxs].reshape(preferred_shape)``. Those two are evaluated here; any other chumpy
node in a key smplx needs is an error that names it.

``J_regressor`` is a scipy sparse matrix pickled under the module path of its day,
``scipy.sparse.csc``; scipy 1.17 still has that module but deprecates it (gone in scipy 2.0),
so every ``scipy.sparse.*`` path to a sparse class is read as the class in ``scipy.sparse``.

The unpickler loads nothing but numpy arrays, scipy sparse matrices, chumpy stand-ins and
builtin containers: a file that references anything else is not a MANO model.

MANO_LEFT.pkl's bug (smplx issue #48): its ``shapedirs`` x component has the right hand's
sign, so the same betas give mirrored-different hands; ``fix_left_shapedirs`` negates it.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from data_schemas.atomic import atomic_path
from data_schemas.checks import existing_file
from data_schemas.errors import SchemaError

LOG = logging.getLogger("handdiffuse.mano_io")

KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f",
        "hands_components", "hands_mean")
RIGHT_FILE = "MANO_RIGHT.pkl"
LEFT_FILE = "MANO_LEFT.pkl"
N_JOINTS = 16  # wrist + 15 finger joints
N_BETAS = 10  # shape components smplx.MANO uses
POSE_BASIS = 9 * (N_JOINTS - 1)  # 135: (R - I) of the 15 finger joints
POSE_DIM = 3 * (N_JOINTS - 1)  # 45

# Globals a MANO pickle may reference besides chumpy and scipy.sparse; module names as written
# by Python 2 (``__builtin__``, ``copy_reg``) or Python 3, before the unpickler's renaming.
_ALLOWED_GLOBALS = {
    ("__builtin__", "set"), ("builtins", "set"),
    ("__builtin__", "frozenset"), ("builtins", "frozenset"),
    ("__builtin__", "object"), ("builtins", "object"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}
_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                  "numpy.core.numeric", "numpy._core.numeric")
_NUMPY_NAMES = ("ndarray", "dtype", "_reconstruct", "scalar", "_frombuffer")
_SPARSE_CLASSES = {name for name in dir(sp) if name.endswith(("_matrix", "_array"))
                   and isinstance(getattr(sp, name), type) and issubclass(getattr(sp, name), sp.spmatrix | sp.sparray)}
_EVALUATED = ("chumpy.ch.Ch", "chumpy.reordering.Select")
_MAX_DEPTH = 32


class ChumpyNode:
    """Stand-in for any chumpy class: keeps the pickled state, evaluates nothing itself."""

    chumpy_class = "chumpy"  # set per stand-in subclass: the pickled module.name

    def __init__(self, *args: Any) -> None:  # only reached if a pickle calls the class
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.chumpy_class}>"


_STAND_INS: dict[str, type] = {}


def _stand_in(module: str, name: str) -> type:
    path = f"{module}.{name}"
    if path not in _STAND_INS:
        _STAND_INS[path] = type(name, (ChumpyNode,), {"chumpy_class": path, "__module__": __name__})
    return _STAND_INS[path]


class _Refused(pickle.UnpicklingError):
    pass


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _stand_in(module, name)
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE_CLASSES:
            return getattr(sp, name)  # old paths (scipy.sparse.csc, ._csc, ...) -> current class
        if (module, name) in _ALLOWED_GLOBALS or (module in _NUMPY_MODULES and name in _NUMPY_NAMES):
            return super().find_class(module, name)
        raise _Refused(f"it references {module}.{name}, which a MANO model does not hold")


class _CannotEvaluate(Exception):
    pass


def _state_dict(node: ChumpyNode) -> dict:
    state = node.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = {**state[0], **(state[1] or {})}  # (dict, slots) form
    if not isinstance(state, dict):
        raise _CannotEvaluate(f"a {node.chumpy_class} without pickled state")
    return state


def _value(obj: Any, depth: int = 0) -> Any:
    """A chumpy node's value (float64 array, as chumpy's ``.r``) or a sparse matrix dense."""
    if depth > _MAX_DEPTH:
        raise _CannotEvaluate(f"chumpy expression nested deeper than {_MAX_DEPTH}")
    if isinstance(obj, ChumpyNode):
        state = _state_dict(obj)
        if obj.chumpy_class == "chumpy.ch.Ch":
            if "x" not in state:
                raise _CannotEvaluate("a chumpy.ch.Ch without its value 'x'")
            r = _value(state["x"], depth + 1)
        elif obj.chumpy_class == "chumpy.reordering.Select":
            if "a" not in state or "idxs" not in state:
                raise _CannotEvaluate("a chumpy.reordering.Select without 'a' or 'idxs'")
            a = np.asarray(_value(state["a"], depth + 1))
            r = a.ravel()[np.asarray(state["idxs"], dtype=np.int64)]
            if state.get("preferred_shape") is not None:
                r = r.reshape(tuple(state["preferred_shape"]))
        else:
            raise _CannotEvaluate(
                f"a {obj.chumpy_class} expression, which cannot be evaluated without chumpy "
                f"(this loader evaluates {' and '.join(_EVALUATED)})")
        return np.array(np.atleast_1d(r), dtype=np.float64, order="C")
    if sp.issparse(obj):
        return _dense(obj)
    return obj


def _dense(m: Any) -> np.ndarray:
    attrs = vars(m)
    if "_shape" not in attrs and "shape" in attrs:  # state from a scipy that stored 'shape'
        m._shape = tuple(int(n) for n in attrs.pop("shape"))
    try:
        return np.asarray(m.toarray())
    except Exception as e:  # noqa: BLE001 - any failure means the pickled matrix is unreadable
        raise _CannotEvaluate(f"a scipy {type(m).__name__} that could not be read ({type(e).__name__}: {e})")


def load_model_pickle(path: str | Path) -> dict:
    """A MANO-format pickle as a dict of numpy arrays (chumpy and sparse values converted).

    Keys smplx needs (``KEYS``) are checked for presence and shape. Other keys whose chumpy
    value cannot be evaluated are dropped (logged); strings and the like are kept as they are.
    """
    path = existing_file(path, "a MANO .pkl file")
    try:
        with open(path, "rb") as fh:
            raw = _Unpickler(fh, encoding="latin1").load()
    except _Refused as e:
        raise SchemaError(path, f"not a MANO-format pickle ({e})") from None
    except OSError as e:
        raise SchemaError(path, f"cannot read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - whatever unpickling raised, the file is not a model
        raise SchemaError(path, f"not a MANO-format pickle ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise SchemaError(path, f"not a MANO-format pickle (it holds a {type(raw).__name__}, expected a dict)")

    model: dict = {}
    for key, value in raw.items():
        try:
            try:
                model[key] = _value(value)
            except (ValueError, IndexError, TypeError) as e:  # e.g. a Select whose idxs do not fit
                raise _CannotEvaluate(f"a value that could not be evaluated ({type(e).__name__}: {e})") from None
        except _CannotEvaluate as e:
            if key in KEYS:
                raise SchemaError(path, f"'{key}' is {e}") from None
            LOG.warning("%s: dropped '%s': it is %s", path, key, e)
    _check(path, model)
    return model


def _check(path: Path, m: dict) -> None:
    for key in KEYS:
        if key not in m:
            raise SchemaError(path, f"missing key '{key}'")
        if not isinstance(m[key], np.ndarray):
            raise SchemaError(path, f"'{key}' is a {type(m[key]).__name__}, expected an array")
        if m[key].dtype.kind not in "biuf":
            raise SchemaError(path, f"'{key}' has dtype {m[key].dtype}, expected numbers")

    def shape(key: str, ok: bool, expected: str) -> None:
        if not ok:
            raise SchemaError(path, f"'{key}' has shape {m[key].shape}, expected {expected}")

    vt = m["v_template"]
    shape("v_template", vt.ndim == 2 and vt.shape[1] == 3 and vt.shape[0] > 0, "(V, 3)")
    V = vt.shape[0]
    s = {k: m[k].shape for k in KEYS}
    shape("shapedirs", len(s["shapedirs"]) == 3 and s["shapedirs"][:2] == (V, 3) and s["shapedirs"][2] >= N_BETAS,
          f"(V, 3, >={N_BETAS}) with V={V}")
    shape("posedirs", s["posedirs"] == (V, 3, POSE_BASIS), f"(V, 3, {POSE_BASIS}) with V={V}")
    shape("J_regressor", s["J_regressor"] == (N_JOINTS, V), f"({N_JOINTS}, V) with V={V}")
    shape("weights", s["weights"] == (V, N_JOINTS), f"(V, {N_JOINTS}) with V={V}")
    shape("kintree_table", s["kintree_table"] == (2, N_JOINTS), f"(2, {N_JOINTS})")
    shape("f", len(s["f"]) == 2 and s["f"][1] == 3 and s["f"][0] > 0, "(F, 3)")
    shape("hands_components", len(s["hands_components"]) == 2 and s["hands_components"][1] == POSE_DIM
          and s["hands_components"][0] > 0, f"(N, {POSE_DIM})")
    shape("hands_mean", s["hands_mean"] == (POSE_DIM,), f"({POSE_DIM},)")

    f = m["f"]
    if f.dtype.kind not in "iu":
        raise SchemaError(path, f"'f' has dtype {f.dtype}, expected integer vertex indices")
    if f.min() < 0 or f.max() >= V:
        raise SchemaError(path, f"'f' has vertex indices outside 0..{V - 1} (min {f.min()}, max {f.max()})")
    for key in KEYS:
        a = m[key]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = ~np.isfinite(a)
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise SchemaError(path, f"'{key}' has {int(bad.sum())} NaN/inf values (first at index {first})")


def fix_left_shapedirs(left: dict, right: dict) -> bool:
    """Negate ``left['shapedirs'][:, 0, :]`` if it carries the right hand's x sign (MANO_LEFT bug).

    The test is the one used since smplx issue #48 (InterHand2.6M and most code after it):
    ``sum |left_sd[:, 0, :] - right_sd[:, 0, :]| < 1`` over the shared shape components. A
    correctly mirrored left (x already negated) differs by ``2 sum |right_sd[:, 0, :]|`` and
    is left alone. Returns whether the fix was applied.
    """
    lsd, rsd = left["shapedirs"], right["shapedirs"]
    if lsd.shape[:2] != rsd.shape[:2]:
        raise ValueError(f"left shapedirs {lsd.shape} and right shapedirs {rsd.shape} differ in vertices")
    k = min(lsd.shape[2], rsd.shape[2])
    if np.abs(lsd[:, 0, :k] - rsd[:, 0, :k]).sum() >= 1:
        return False
    if not lsd.flags.writeable:
        lsd = left["shapedirs"] = lsd.copy()
    lsd[:, 0, :] *= -1
    return True


def load_mano_pair(folder: str | Path) -> tuple[dict, dict]:
    """``(right, left)`` from ``folder/MANO_RIGHT.pkl`` and ``folder/MANO_LEFT.pkl``, left fixed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SchemaError(folder, "folder not found" if not folder.exists() else "is not a folder")
    right = load_model_pickle(folder / RIGHT_FILE)
    left_path = folder / LEFT_FILE
    left = load_model_pickle(left_path)
    vr, vl = right["v_template"].shape[0], left["v_template"].shape[0]
    if vl != vr:
        raise SchemaError(left_path, f"has {vl} vertices but {RIGHT_FILE} has {vr}")
    if fix_left_shapedirs(left, right):
        LOG.info("%s: negated shapedirs[:, 0, :] (MANO_LEFT x-sign bug, smplx issue #48)", left_path)
    return right, left


def _is_plain(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    return value is None or isinstance(value, (str, bytes, bool, int, float, np.number, np.bool_))


def write_model_pickle(path: str | Path, data: dict) -> None:
    """Write a model dict as a numpy-only pickle (no chumpy, no scipy), atomically."""
    clean: dict = {}
    for key, value in data.items():
        if not _is_plain(value):
            raise SchemaError(path, f"'{key}' is a {type(value).__name__}, which a numpy-only model pickle cannot hold")
        clean[str(key)] = np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(clean, fh, protocol=2)


def convert(src_folder: str | Path, out_folder: str | Path) -> list[Path]:
    """Write clean ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` (left fixed) that smplx loads without chumpy."""
    src, out = Path(src_folder), Path(out_folder)
    right, left = load_mano_pair(src)
    if out.exists() and out.resolve() == src.resolve():
        raise SchemaError(out, "is the source folder; write the converted files to another folder")
    written = []
    for name, model in ((RIGHT_FILE, right), (LEFT_FILE, left)):
        dropped = sorted(str(k) for k, v in model.items() if not _is_plain(v))
        if dropped:
            LOG.warning("%s: not copied (neither numbers nor text): %s", src / name, ", ".join(dropped))
        write_model_pickle(out / name, {k: v for k, v in model.items() if _is_plain(v)})
        written.append(out / name)
    return written
