"""HDF5 plumbing shared by every file format: format/version attributes, chunked
compressed datasets with a checksum each, and one-line errors on bad files.

Every HDF5 file the system writes has root attributes ``format`` (e.g.
``handdiffuse.joints3d``) and ``version`` (an int). Each dataset carries a
``sha256`` attribute over its content (C order, native dtype; strings UTF-8,
NUL-separated) and HDF5's fletcher32 filter on each chunk, so corruption is caught
both by HDF5 on read and by a full check in ``verify_checksums``.
"""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import h5py
import numpy as np

from data_schemas.atomic import atomic_write_bytes
from data_schemas.checks import existing_file
from data_schemas.errors import SchemaError

CHECKSUM_ATTR = "sha256"
STR_DTYPE = h5py.string_dtype("utf-8")
T = TypeVar("T")


def digest(array: np.ndarray) -> str:
    a = np.asarray(array)
    if a.dtype.kind in "OUS":
        items = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in a.ravel()]
        data = "\0".join(items).encode("utf-8")
    else:
        data = np.ascontiguousarray(a).tobytes()
    return hashlib.sha256(data).hexdigest()


def write_array(
    group: h5py.Group, name: str, array: np.ndarray, chunk_frames: int | None = 256, frame_axis: int = 0
) -> h5py.Dataset:
    """Write ``array`` chunked along ``frame_axis`` (if given), gzip + shuffle + fletcher32."""
    a = np.asarray(array)
    if a.dtype.kind == "U" or a.dtype.kind == "O":
        ds = group.create_dataset(name, data=a.astype(object), dtype=STR_DTYPE)
    elif a.ndim == 0 or a.size == 0 or chunk_frames is None:
        ds = group.create_dataset(name, data=a)
    else:
        chunks = list(a.shape)
        chunks[frame_axis] = max(1, min(a.shape[frame_axis], chunk_frames))
        for ax in range(frame_axis):  # one chunk per leading index (e.g. per camera)
            chunks[ax] = 1
        ds = group.create_dataset(
            name, data=a, chunks=tuple(chunks), compression="gzip", compression_opts=4,
            shuffle=True, fletcher32=True,
        )
    ds.attrs[CHECKSUM_ATTR] = digest(a)
    return ds


def read_array(group: h5py.Group, name: str, source: str | Path, verify: bool = True) -> np.ndarray:
    if name not in group:
        raise SchemaError(source, f"missing dataset '{_join(group.name, name)}'")
    ds = group[name]
    try:
        a = ds[()]
    except OSError as e:
        raise SchemaError(source, f"dataset '{ds.name}' is corrupt (HDF5 read failed: {_first_line(e)})")
    if ds.dtype.kind == "O":
        a = np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in np.ravel(a)], dtype=object)
        a = a.reshape(ds.shape) if ds.shape else a
    if verify and CHECKSUM_ATTR not in ds.attrs:
        raise SchemaError(source, _no_checksum(ds.name, "the stage that wrote it"))
    if verify and digest(a) != ds.attrs[CHECKSUM_ATTR]:
        raise SchemaError(source, f"dataset '{ds.name}' fails its checksum (file corrupted)")
    return a


def require_checksums(f: h5py.File, source: str | Path, produced_by: str) -> None:
    """Refuse a file with a dataset that has no checksum: every writer of this format version
    puts one on each, so a dataset without it was changed, or added, by something else."""
    found: list[str] = []
    attr = CHECKSUM_ATTR.encode()

    def visit(name: bytes, info: h5py.h5o.ObjInfo) -> bool | None:  # low level: twice as fast as visititems
        if info.type == h5py.h5o.TYPE_DATASET and not h5py.h5a.exists(f.id, attr, obj_name=name):
            found.append("/" + name.decode("utf-8"))
            return True  # stops the walk
        return None

    h5py.h5o.visit(f.id, visit, info=True)
    if found:
        raise SchemaError(source, _no_checksum(found[0], f"`{produced_by}`"))


def _no_checksum(dataset: str, rerun: str) -> str:
    return (f"dataset '{dataset}' has no checksum (its '{CHECKSUM_ATTR}' attribute was removed: the file was changed "
            f"outside handdiffuse); re-run {rerun}")


def verify_checksums(f: h5py.File, source: str | Path) -> list[str]:
    """Check every dataset of an open file; return one line per bad dataset."""
    problems: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            if CHECKSUM_ATTR not in obj.attrs:
                problems.append(f"{source}: dataset '{obj.name}' has no checksum")
                return
            try:
                read_array(obj.parent, obj.name.rsplit("/", 1)[-1], source, verify=True)
            except SchemaError as e:
                problems.append(str(e))

    f.visititems(visit)
    return problems


@contextmanager
def create(path: str | Path, fmt: str, version: int, **attrs: object) -> Iterator[h5py.File]:
    """Open a new HDF5 file for writing, atomically: it appears at ``path`` only when complete.

    HDF5 builds the file in memory; the finished image goes to disk in one Python write, whose
    failure (full disk, read-only folder) is an OSError that ``atomic_path`` turns into one line.
    HDF5 must never meet a failed write itself: HDF5 2.0 then crashes the process (SIGSEGV in
    H5D__flush_all_cb) closing the file, or at exit. The cost: the file's size in memory.
    """
    image = io.BytesIO()
    with h5py.File(image, "w", libver="latest") as f:
        f.attrs["format"] = fmt
        f.attrs["version"] = int(version)
        for k, v in attrs.items():
            f.attrs[k] = v
        yield f
    atomic_write_bytes(path, image.getbuffer())


@contextmanager
def open_checked(
    path: str | Path, fmt: str, version: int, produced_by: str
) -> Iterator[h5py.File]:
    """Open an existing file and check it is ``fmt`` at ``version``; errors name the file."""
    path = existing_file(path, "an HDF5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        msg = str(e)
        if "truncated" in msg:
            raise SchemaError(path, f"truncated HDF5 file (incomplete write or copy); re-run `{produced_by}`")
        raise SchemaError(path, f"not a readable HDF5 file ({_first_line(e)})")
    with f:
        check_format(f, path, fmt, version, produced_by)
        require_checksums(f, path, produced_by)
        yield f


def check_format(f: h5py.File, source: str | Path, fmt: str, version: int, produced_by: str) -> None:
    actual = f.attrs.get("format")
    if actual is None:
        raise SchemaError(source, "not a handdiffuse file (no 'format' attribute)")
    actual = actual.decode() if isinstance(actual, bytes) else str(actual)
    if actual != fmt:
        raise SchemaError(source, f"is a '{actual}' file, expected '{fmt}'")
    v = f.attrs.get("version")
    if v is None:
        raise SchemaError(source, "has no 'version' attribute")
    v = int(v)
    if v > version:
        raise SchemaError(
            source,
            f"unknown {fmt} format version {v} (this handdiffuse reads version {version}); "
            f"upgrade handdiffuse, or re-run `{produced_by}` to rewrite it",
        )
    if v < version:
        raise SchemaError(
            source, f"old {fmt} format version {v} (this handdiffuse reads version {version}); re-run `{produced_by}`"
        )


def attr_str(f: h5py.Group, name: str, source: str | Path) -> str:
    if name not in f.attrs:
        raise SchemaError(source, f"missing attribute '{name}' on '{f.name}'")
    v = f.attrs[name]
    return v.decode() if isinstance(v, bytes) else str(v)


def attr_float(f: h5py.Group, name: str, source: str | Path) -> float:
    if name not in f.attrs:
        raise SchemaError(source, f"missing attribute '{name}' on '{f.name}'")
    return float(f.attrs[name])


def _join(group: str, name: str) -> str:
    return f"{group.rstrip('/')}/{name}"


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def read_if_current(path: Path, read: Callable[[Path], T], inputs: str) -> T | None:
    """The stage output at ``path`` if it exists, reads cleanly and was made from ``inputs``
    (its ``inputs`` fingerprint); else None: the stage makes it (again)."""
    if not Path(path).is_file():
        return None
    try:
        old = read(path)
    except SchemaError:
        return None
    return old if getattr(old, "inputs", None) == inputs else None
