"""Batch outputs: label images (TIFF or zarr), per-object tables (CSV), written atomically.

Per input item ``<name>`` the output folder gets::

    <name>_labels.tif   (or <name>_labels.zarr)   int32 [H, W] or [T, H, W], 0 = background
    <name>_objects.csv                             one row per object and frame

Every file is first written under a temporary name (``*.tmp-<random>``) and then renamed, so a
file with its final name is always complete. The table is written after the label image: an item
is finished exactly when both exist. Split stacks keep their finished chunks in
``.partial/<name>/`` until the item is assembled, so a resumed run redoes only missing chunks.

Table columns: ``id`` (the label value), ``class_name``, ``score`` (mask confidence; the
similarity for exemplar search), ``area`` (pixels of that id in the label image), ``centroid_row``,
``centroid_col`` (mean pixel position in the label image), ``frame`` (0 for 2D images),
``class_score`` (probability of the class name). Area and centroid are measured on the label image,
so the table always agrees with it, also where objects overlapped and one painted over another.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..engine.result import Segmentation

LABEL_DTYPE = np.int32
COLUMNS = ("id", "class_name", "score", "area", "centroid_row", "centroid_col", "frame", "class_score")
PARTIAL_DIR = ".partial"
TMP_MARK = ".tmp-"
COMBINED_TABLE = "objects.csv"
MANIFEST = "batch.json"


@dataclass(frozen=True)
class ItemPaths:
    """Where one item's outputs go."""

    labels: Path
    table: Path
    partial: Path

    @classmethod
    def of(cls, output_dir: Path, name: str, label_format: str) -> "ItemPaths":
        return cls(labels=output_dir / f"{name}_labels.{label_format}",
                   table=output_dir / f"{name}_objects.csv",
                   partial=output_dir / PARTIAL_DIR / name)

    def existing(self) -> list[Path]:
        return [p for p in (self.labels, self.table) if p.exists()]

    def complete(self) -> bool:
        return self.labels.exists() and self.table.exists()

    def remove(self) -> None:
        for path in (self.table, self.labels, self.partial):
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def commit(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final`` (replacing it); for folders (zarr) the old one is removed first."""
    if tmp.is_dir() and final.exists():
        trash = tmp_name(final)
        os.replace(final, trash)
        os.replace(tmp, final)
        _remove(trash)
    else:
        os.replace(tmp, final)


def remove_stale_tmp(folder: Path, prefix: str) -> None:
    """Delete temporary files left by an interrupted run for outputs starting with ``prefix``."""
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name.startswith(prefix) and TMP_MARK in child.name:
                _remove(child)


# ------------------------------------------------------------------------------------- tables
def frame_table(labels: np.ndarray, result: Segmentation, frame: int) -> pd.DataFrame:
    """Rows for the objects visible in one ``[H, W]`` label frame painted from ``result``."""
    flat = labels.ravel().astype(np.int64)
    size = int(flat.max(initial=0)) + 1
    area = np.bincount(flat, minlength=size)
    rows, cols = np.indices(labels.shape)
    sum_r = np.bincount(flat, weights=rows.ravel(), minlength=size)
    sum_c = np.bincount(flat, weights=cols.ravel(), minlength=size)
    index = {int(i): k for k, i in enumerate(result.object_ids)}
    ids = [i for i in np.flatnonzero(area) if i != 0]
    return pd.DataFrame({
        "id": np.asarray(ids, dtype=np.int64),
        "class_name": [result.class_names[index[i]] if i in index else "" for i in ids],
        "score": np.asarray([result.scores[index[i]] if i in index else np.nan for i in ids], dtype=np.float32),
        "area": area[ids].astype(np.int64),
        "centroid_row": (sum_r[ids] / area[ids]).astype(np.float64),
        "centroid_col": (sum_c[ids] / area[ids]).astype(np.float64),
        "frame": np.full(len(ids), frame, dtype=np.int64),
        "class_score": np.asarray([result.class_scores[index[i]] if i in index else np.nan for i in ids],
                                  dtype=np.float32),
    }, columns=list(COLUMNS))


def write_table(table: pd.DataFrame, path: Path) -> None:
    tmp = tmp_name(path)
    table.to_csv(tmp, index=False)
    commit(tmp, path)


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"class_name": str})


# ------------------------------------------------------------------------------------- labels
def write_labels(path: Path, frames: Iterable[np.ndarray], shape: tuple[int, ...]) -> None:
    """Write label frames (``[H, W]`` each, in order) to ``path`` (``.tif`` or ``.zarr``), atomically.

    ``shape`` is ``(H, W)`` for a 2D image or ``(T, H, W)`` for a stack; frames are consumed one at
    a time, so a stack never has to be in memory at once.
    """
    tmp = tmp_name(path)
    try:
        if path.suffix == ".zarr":
            _write_zarr(tmp, frames, shape)
        else:
            _write_tiff(tmp, frames, shape)
    except BaseException:
        _remove(tmp)
        raise
    commit(tmp, path)


def _write_tiff(path: Path, frames: Iterable[np.ndarray], shape: tuple[int, ...]) -> None:
    import tifffile

    n = 0
    with tifffile.TiffWriter(path) as tif:
        for frame in frames:
            tif.write(np.asarray(frame, dtype=LABEL_DTYPE), compression="zlib", metadata=None)
            n += 1
    _check_count(n, shape, path)


def _write_zarr(path: Path, frames: Iterable[np.ndarray], shape: tuple[int, ...]) -> None:
    import zarr

    chunks = (1, *shape[-2:]) if len(shape) == 3 else shape
    array = zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=LABEL_DTYPE,
                              fill_value=0, zarr_format=2)
    n = 0
    for frame in frames:
        if len(shape) == 3:
            array[n] = frame
        else:
            array[...] = frame
        n += 1
    _check_count(n, shape, path)


def _check_count(n: int, shape: tuple[int, ...], path: Path) -> None:
    expected = shape[0] if len(shape) == 3 else 1
    if n != expected:
        raise RuntimeError(f"{path}: wrote {n} label frames, expected {expected}")


def read_labels(path: Path) -> np.ndarray:
    """A label image written by :func:`write_labels` (``[H, W]`` or ``[T, H, W]``)."""
    if path.suffix == ".zarr":
        import zarr

        return np.asarray(zarr.open(str(path), mode="r")[...])
    import tifffile

    return tifffile.imread(path)


# ------------------------------------------------------------------------------- chunk parts
def part_path(partial: Path, start: int, stop: int) -> Path:
    return partial / f"frames_{start:07d}_{stop:07d}.npz"


def save_part(path: Path, labels: np.ndarray, table: pd.DataFrame) -> None:
    """Store a finished chunk: ``[n, H, W]`` labels and its table rows (no pickles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    columns = {f"col_{c}": np.asarray(table[c].to_numpy(), dtype=str if c == "class_name" else None)
               for c in COLUMNS}
    with open(tmp, "wb") as file:
        np.savez(file, labels=labels.astype(LABEL_DTYPE), **columns)
    commit(tmp, path)


def load_part(path: Path) -> tuple[np.ndarray, pd.DataFrame]:
    with np.load(path, allow_pickle=False) as data:
        table = pd.DataFrame({c: data[f"col_{c}"] for c in COLUMNS}, columns=list(COLUMNS))
        table["class_name"] = table["class_name"].astype(object)
        return data["labels"], table
