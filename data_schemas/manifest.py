"""The dataset's table of contents: ``export/manifest.parquet``, one row per sequence.

The shards (``data_schemas.shard``) hold the arrays; the manifest says which shard holds
each sequence, how long it is, where it came from and which split it belongs to, so a
loader or a statistics pass can choose sequences without opening every shard. It lives
here, beside the shard layout, because every side reads it: ``data_schemas.dataset`` writes
it (for export, import and sampling) and picks the training windows from it, and the
validator checks it against the shards.

Columns (format ``handdiffuse.manifest``, version 1)::

    name               str      dataset sequence name, unique (shard NAME_RE); e.g. "demo.seq000"
    shard              str      file name of the shard holding it, e.g. "shard-00003.h5": a plain name
                                in the manifest's folder (``shard_path``), never a path out of it
    group              str      HDF5 group in that shard: "sequences/<name>"
    frames             int64    frame count
    fps                float64
    category           str      motion category ("" if unknown)
    subject            str
    session            str      capture session name ("" for imported data)
    source             str      "capture" | "generated" | "interhand2.6m" | ...
    capture_date       str
    split              str      "train" | "val" | "test", fixed per sequence
    manual_frames      int64    frames where either hand carries manual 2D annotation
    valid_fraction     float64  share of (frame, hand) valid (with an estimate)
    mean_fit_error_mm  float64  mean fit error over valid (frame, hand), mm; NaN if unknown
    fingerprint        str      hash of what the sequence was made from; equal -> not exported again

Parquet schema metadata: ``handdiffuse.format``, ``handdiffuse.version`` and the split
that assigned the ``split`` column (``handdiffuse.split_seed``, ``handdiffuse.split_ratios``
as JSON), so data appended later is split the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_schemas.atomic import atomic_path
from data_schemas.errors import SchemaError
from data_schemas.paths import check_name, inside

FORMAT = "handdiffuse.manifest"
VERSION = 1
PRODUCED_BY = "handdiffuse export"
MANIFEST_NAME = "manifest.parquet"
SPLITS = ("train", "val", "test")

# column -> pandas dtype, in file order
COLUMNS: dict[str, str] = {
    "name": "object", "shard": "object", "group": "object", "frames": "int64", "fps": "float64",
    "category": "object", "subject": "object", "session": "object", "source": "object",
    "capture_date": "object", "split": "object", "manual_frames": "int64", "valid_fraction": "float64",
    "mean_fit_error_mm": "float64", "fingerprint": "object",
}
_META = {"format": b"handdiffuse.format", "version": b"handdiffuse.version",
         "split_seed": b"handdiffuse.split_seed", "split_ratios": b"handdiffuse.split_ratios"}


def manifest_path(folder: str | Path) -> Path:
    """The manifest of a dataset folder (a path to the file itself is returned as is)."""
    p = Path(folder)
    return p if p.suffix == ".parquet" else p / MANIFEST_NAME


def shard_path(folder: str | Path, shard: object) -> Path:
    """The file a row's ``shard`` names: a plain file name in the dataset folder, refused (naming
    the manifest) when it is a path or a symlink that leads out of the folder."""
    path = manifest_path(folder)
    return inside(path.parent, check_name(shard, path, "shard"), path, "shard")


def empty_manifest():
    import pandas as pd

    return pd.DataFrame({k: pd.Series(dtype=t) for k, t in COLUMNS.items()})


def read_manifest(folder: str | Path):
    """The manifest as a DataFrame (``COLUMNS``, one row per sequence); ``df.attrs`` holds
    ``split_seed`` and ``split_ratios``. SchemaError naming the file on anything unexpected."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = manifest_path(folder)
    if not path.is_file():
        raise SchemaError(path, "file not found: run `handdiffuse export` first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise SchemaError(path, f"not a readable parquet file ({_first_line(e)})")
    meta = table.schema.metadata or {}
    fmt = meta.get(_META["format"], b"").decode()
    if fmt != FORMAT:
        raise SchemaError(path, f"not a handdiffuse manifest (format {fmt!r}, expected '{FORMAT}')")
    version = int(meta.get(_META["version"], b"0"))
    if version != VERSION:
        newer = "upgrade handdiffuse, or " if version > VERSION else ""
        raise SchemaError(path, f"unknown {FORMAT} format version {version} (this handdiffuse reads version "
                                f"{VERSION}); {newer}re-run `{PRODUCED_BY}` into a new folder")
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise SchemaError(path, f"missing column '{missing[0]}' (a manifest has: {', '.join(COLUMNS)})")
    df = table.select(list(COLUMNS)).to_pandas()
    try:
        df = df.astype(COLUMNS)
    except (TypeError, ValueError) as e:
        raise SchemaError(path, f"a column has the wrong type ({_first_line(e)})")
    if df["name"].duplicated().any():
        raise SchemaError(path, f"sequence '{df['name'][df['name'].duplicated()].iloc[0]}' appears twice")
    bad = ~df["split"].isin(SPLITS)
    if bad.any():
        raise SchemaError(path, f"sequence '{df['name'][bad].iloc[0]}' has split {df['split'][bad].iloc[0]!r} "
                                f"(expected one of {', '.join(SPLITS)})")
    for shard in df["shard"].unique():
        shard_path(path, shard)
    df.attrs["split_seed"] = int(meta.get(_META["split_seed"], b"0"))
    df.attrs["split_ratios"] = tuple(json.loads(meta.get(_META["split_ratios"], b"[0.8, 0.1, 0.1]")))
    return df


def write_manifest(folder: str | Path, df, split_seed: int, split_ratios: tuple[float, float, float]) -> Path:
    """Write ``df`` (``COLUMNS``) atomically: readers see the old manifest or the new one, never half."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = manifest_path(folder)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(path, f"missing column '{missing[0]}'")
    if df["name"].duplicated().any():
        raise SchemaError(path, f"sequence '{df['name'][df['name'].duplicated()].iloc[0]}' appears twice")
    for shard in df["shard"].unique():
        check_name(shard, path, "shard")
    table = pa.Table.from_pandas(df[list(COLUMNS)].astype(COLUMNS).reset_index(drop=True), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.update({_META["format"]: FORMAT.encode(), _META["version"]: str(VERSION).encode(),
                 _META["split_seed"]: str(int(split_seed)).encode(),
                 _META["split_ratios"]: json.dumps([float(r) for r in split_ratios]).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return path


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
