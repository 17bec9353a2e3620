"""Annotation sessions on disk: a ``<name>.seem/`` folder that napari reads back into the same layers.

Format (version 1)::

    cells.seem/
        session.json              # index: format, version, layers in order, SEEM model/settings/vocabulary
        00_image.tif              # Image layers: the pixels (TIFF, dtype and shape kept)
        01_cells seem.tif         # Labels layers: the label image (TIFF)
        01_cells seem.csv         # ... and its class table (one row per label id: index, class_name, ...)
        02_prompts.json           # Points / Shapes layers: coordinates, shape types and features (JSON)

``session.json`` holds, per layer: ``name``, ``type`` (``image``/``labels``/``points``/``shapes``),
``files``, the transform (``scale``, ``translate``, ``rotate``, ``shear``, ``affine``), display
settings and, for tables, each column's dtype so that reading restores the exact values. The
``seem`` entry is the ``metadata["napari_seem"]`` dict the SEEM widget keeps on its output
Labels layer (model name or checkpoint, device, settings, vocabulary) so a result can be
reproduced. Floats are stored in JSON/CSV with their shortest exact decimal form, so a
session read back equals the one written, bit for bit.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import tifffile

FORMAT = "napari-seem-session"
VERSION = 1
SUFFIX = ".seem"
INDEX = "session.json"
METADATA_KEY = "napari_seem"

_TRANSFORM_KEYS = ("scale", "translate", "rotate", "shear", "affine")
_COMMON_KEYS = ("opacity", "blending", "visible")
_EXTRA_KEYS = {
    "image": ("colormap", "contrast_limits", "gamma", "rgb"),
    "labels": (),
    "points": ("size", "face_color", "border_color", "symbol", "border_width"),
    "shapes": ("edge_width", "edge_color", "face_color", "z_index"),
}

LayerData = tuple[Any, dict, str]


# ---------------------------------------------------------------------------------------- helpers
def _jsonable(value: Any) -> Any:
    """Plain JSON value of numpy arrays/scalars, enums, tuples and nested containers."""
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (str, bytes)):  # enums
        return _jsonable(value.value)
    if hasattr(value, "name") and not isinstance(value, (int, float, bool, str)):  # colormaps
        return value.name
    return value


def _safe_name(index: int, name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "_", name).strip() or "layer"
    return f"{index:02d}_{cleaned}"


def _table_to_json(table: pd.DataFrame) -> dict:
    """Columns with dtypes (``category`` keeps its categories) and values as lists."""
    columns = {}
    for col in table.columns:
        series = table[col]
        entry: dict[str, Any] = {"dtype": str(series.dtype)}
        if isinstance(series.dtype, pd.CategoricalDtype):
            entry["categories"] = _jsonable(np.asarray(series.cat.categories))
            entry["values"] = _jsonable(np.asarray(series.astype(object)))
        else:
            entry["values"] = _jsonable(series.to_numpy())
        columns[str(col)] = entry
    return {"columns": columns}


def _table_from_json(spec: dict) -> pd.DataFrame:
    data = {}
    for col, entry in spec["columns"].items():
        data[col] = _series(entry["values"], entry)
    return pd.DataFrame(data)


def _series(values, entry: dict) -> pd.Series:
    dtype = entry["dtype"]
    if dtype == "category":
        return pd.Series(pd.Categorical(values, categories=entry["categories"]))
    if dtype in ("object", "str", "string") or dtype.startswith("string"):
        return pd.Series(values, dtype=object if dtype == "object" else dtype)
    return pd.Series(np.asarray(values, dtype=dtype))


def _write_csv(table: pd.DataFrame, path: Path) -> dict:
    table.to_csv(path, index=False)
    return {c: {"dtype": str(table[c].dtype),
                **({"categories": _jsonable(np.asarray(table[c].cat.categories))}
                   if isinstance(table[c].dtype, pd.CategoricalDtype) else {})}
            for c in table.columns}


def _read_csv(path: Path, dtypes: dict) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    data = {}
    for col, entry in dtypes.items():
        values = raw[col].tolist() if col in raw else []
        kind = entry["dtype"]
        if kind in ("object", "str", "string", "category") or kind.startswith("string"):
            data[col] = _series(values, entry)
        elif kind == "bool":
            data[col] = pd.Series(np.asarray([v == "True" for v in values], dtype=bool))
        else:
            data[col] = pd.Series(np.asarray([float(v) if v != "" else np.nan for v in values]).astype(kind))
    return pd.DataFrame(data, columns=list(dtypes))


# ----------------------------------------------------------------------------------------- writer
def write_session(path: str, layer_data: list[LayerData]) -> list[str]:
    """npe2 writer: save layers (image, labels, points, shapes) as a ``.seem`` session folder.

    Args:
        path: destination; ``.seem`` is appended when missing. An existing session folder is
            replaced; any other existing path raises ``FileExistsError``.
        layer_data: napari's ``(data, meta, layer_type)`` tuples.

    Returns:
        ``[folder]``, the path written.
    """
    folder = Path(path)
    if folder.suffix != SUFFIX:
        folder = folder.with_name(folder.name + SUFFIX)
    if folder.exists():
        if not (folder / INDEX).is_file():
            raise FileExistsError(f"{folder} exists and is not a napari-seem session; choose another name")
        for child in folder.iterdir():
            if child.is_file():
                child.unlink()
    folder.mkdir(parents=True, exist_ok=True)

    index: dict[str, Any] = {"format": FORMAT, "version": VERSION, "seem": {}, "layers": []}
    for i, (data, meta, layer_type) in enumerate(layer_data):
        if layer_type not in _EXTRA_KEYS:
            raise ValueError(f"napari-seem sessions hold image, labels, points and shapes layers, not {layer_type}")
        stem = _safe_name(i, meta.get("name", layer_type))
        entry: dict[str, Any] = {"name": meta.get("name", stem), "type": layer_type, "files": {}}
        for key in (*_TRANSFORM_KEYS, *_COMMON_KEYS, *_EXTRA_KEYS[layer_type]):
            if key in meta and meta[key] is not None:
                entry[key] = _jsonable(meta[key])
        seem_meta = (meta.get("metadata") or {}).get(METADATA_KEY)
        if seem_meta:
            entry["seem"] = _jsonable(seem_meta)
            if layer_type == "labels" and not index["seem"]:
                index["seem"] = entry["seem"]

        if layer_type in ("image", "labels"):
            array = np.asarray(data[0] if meta.get("multiscale") else data)
            tifffile.imwrite(folder / f"{stem}.tif", array)
            entry["files"]["data"] = f"{stem}.tif"
            entry["dtype"], entry["shape"] = str(array.dtype), list(array.shape)
            features = meta.get("features")
            if layer_type == "labels" and features is not None and len(features.columns):
                entry["files"]["classes"] = f"{stem}.csv"
                entry["columns"] = _write_csv(pd.DataFrame(features), folder / f"{stem}.csv")
        else:
            record: dict[str, Any] = {"ndim": int(meta.get("ndim", 2))}
            if layer_type == "points":
                record["data"] = np.asarray(data, dtype=np.float64).tolist()
            else:
                record["data"] = [np.asarray(d, dtype=np.float64).tolist() for d in data]
                record["shape_type"] = list(meta.get("shape_type", []))
            for key in ("features", "feature_defaults"):
                table = meta.get(key)
                if table is not None and len(table.columns):
                    record[key] = _table_to_json(pd.DataFrame(table))
            (folder / f"{stem}.json").write_text(json.dumps(record))
            entry["files"]["data"] = f"{stem}.json"
        index["layers"].append(entry)
    (folder / INDEX).write_text(json.dumps(index, indent=2))
    return [str(folder)]


# ----------------------------------------------------------------------------------------- reader
def is_session(path: str | Path) -> bool:
    """True for a folder holding a napari-seem ``session.json``."""
    folder = Path(path)
    if not (folder.is_dir() and (folder / INDEX).is_file()):
        return False
    try:
        return json.loads((folder / INDEX).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """npe2 reader hook: :func:`read_session` for a ``.seem`` session folder, else ``None``."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_session if is_session(path) else None


def read_session(path: str | list[str]) -> list[LayerData]:
    """Layers of a session folder, in the saved order, as napari ``(data, kwargs, type)`` tuples."""
    folder = Path(path[0] if isinstance(path, list) else path)
    index = json.loads((folder / INDEX).read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{folder} is not a napari-seem session")
    if int(index.get("version", 0)) > VERSION:
        raise ValueError(f"{folder} was written by a newer napari-seem (format version {index['version']})")
    layers: list[LayerData] = []
    for entry in index["layers"]:
        layer_type = entry["type"]
        kwargs: dict[str, Any] = {"name": entry["name"]}
        for key in (*_TRANSFORM_KEYS, *_COMMON_KEYS, *_EXTRA_KEYS[layer_type]):
            if key in entry:
                kwargs[key] = entry[key]
        for key in ("scale", "translate", "affine"):
            if key in kwargs:
                kwargs[key] = np.asarray(kwargs[key], dtype=np.float64)
        if "seem" in entry:
            kwargs["metadata"] = {METADATA_KEY: entry["seem"]}
        files = entry["files"]
        if layer_type in ("image", "labels"):
            data = tifffile.imread(folder / files["data"])
            data = data.astype(entry["dtype"], copy=False).reshape(entry["shape"])
            if "classes" in files:
                kwargs["features"] = _read_csv(folder / files["classes"], entry["columns"])
        else:
            record = json.loads((folder / files["data"]).read_text())
            kwargs["ndim"] = record["ndim"]
            if layer_type == "points":
                data = np.asarray(record["data"], dtype=np.float64).reshape(-1, record["ndim"])
            else:
                data = [np.asarray(d, dtype=np.float64) for d in record["data"]]
                kwargs["shape_type"] = record["shape_type"]
            for key in ("features", "feature_defaults"):
                if key in record:
                    kwargs[key] = _table_from_json(record[key])
            for key in ("size", "border_width"):
                if key in kwargs and isinstance(kwargs[key], list):
                    kwargs[key] = np.asarray(kwargs[key])
        layers.append((data, kwargs, layer_type))
    return layers
