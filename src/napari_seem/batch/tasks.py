"""The work of one dask task, and the model each worker process keeps.

A worker builds its :class:`~napari_seem.engine.Segmenter` on its first task and keeps it in a
module-level cache keyed by the :class:`ModelSpec` (one worker process = one Python interpreter =
one cache), so the checkpoint is read once per worker, never per task. ``load_count()`` tells how
often this process built a model (``client.run(load_count)`` asks every worker).

Task kinds (all write their own outputs, so workers need the output folder on a shared disk):

- :func:`segment_item`: a 2D image, or a stack small enough for one task, prompted per frame;
- :func:`segment_chunk`: frames ``start..stop-1`` of a split stack, saved as a part;
- :func:`assemble_item`: the parts of a split stack joined into its label image and table;
- :func:`propagate_item`: objects seeded on one frame carried through a whole stack, in order.

:func:`segment_frame` is the per-frame prompt logic; the single-process path uses it too.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from ..engine import ObjectPrompt, Segmentation, Segmenter, Vocabulary
from ..engine.result import positions_of
from .io import ImageSource
from .outputs import (
    COLUMNS,
    LABEL_DTYPE,
    ItemPaths,
    frame_table,
    load_part,
    part_path,
    save_part,
    write_labels,
    write_table,
)
from .spec import Job, ModelSpec, PromptSpec, RunOptions

_SEGMENTERS: dict[ModelSpec, Segmenter] = {}
_LOCK = threading.Lock()
_LOADS = 0


@dataclass(frozen=True)
class TaskReport:
    """What a task did: for the progress bar and the run summary."""

    name: str
    frames: int
    objects: int
    seconds: float


# ----------------------------------------------------------------------------- the worker's model
def _worker_device(device: str) -> str:
    """``"cuda"`` on a multi-GPU machine: one GPU per worker, by the worker's index."""
    if device != "cuda" or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        index = int(get_worker().name)
    except (ImportError, ValueError, TypeError):
        return device
    return f"cuda:{index % torch.cuda.device_count()}"


def get_segmenter(spec: ModelSpec, torch_threads: int | None = None) -> Segmenter:
    """This process's segmenter for ``spec``, built on first use (a new spec replaces the old one)."""
    global _LOADS
    with _LOCK:
        segmenter = _SEGMENTERS.get(spec)
        if segmenter is None:
            _SEGMENTERS.clear()
            if torch_threads is not None:
                torch.set_num_threads(torch_threads)
            segmenter = Segmenter.from_pretrained(
                spec.name_or_path, config=spec.config, device=_worker_device(spec.device),
                precision=spec.precision, seed=spec.seed, **spec.resolution(),
            )
            _SEGMENTERS[spec] = segmenter
            _LOADS += 1
        return segmenter


def load_count() -> int:
    """How many models this process has built (1 after any number of tasks with one model)."""
    return _LOADS


def _prepared(job: Job) -> Segmenter:
    segmenter = get_segmenter(job.model, job.options.torch_threads)
    vocabulary = job.prompt.vocabulary
    segmenter.set_vocabulary(Vocabulary(vocabulary) if vocabulary else segmenter.default_vocabulary)
    return segmenter


# ------------------------------------------------------------------------------ per-frame prompts
def segment_frame(segmenter: Segmenter, frame: np.ndarray, prompt: PromptSpec, options: RunOptions) -> Segmentation:
    """Apply a per-frame prompt (text, vocabulary or exemplar) to one ``[H, W]`` / ``[H, W, C]`` frame."""
    if prompt.kind == "exemplar":
        return segmenter.find_similar(prompt.exemplar_image, prompt.exemplar_mask, frame,
                                      min_similarity=prompt.min_similarity, similarity=prompt.similarity,
                                      normalize=options.normalize)
    if prompt.kind not in ("text", "vocabulary"):
        raise ValueError(f"{prompt.kind!r} is not a per-frame prompt")
    vocabulary = Vocabulary(prompt.vocabulary) if prompt.kind == "vocabulary" else None
    if options.tile is not None:
        tile = None if options.tile == "auto" else options.tile
        return segmenter.segment_tiled(frame, text=prompt.text if prompt.kind == "text" else None,
                                       vocabulary=vocabulary, tile=tile, overlap=options.tile_overlap,
                                       normalize=options.normalize)
    segmenter.set_image(frame, normalize=options.normalize)
    if prompt.kind == "text":
        return segmenter.predict(text=prompt.text)
    return segmenter.segment_everything(vocabulary=vocabulary)


def label_frames(segmenter: Segmenter, frames: np.ndarray, first: int, job: Job) -> tuple[np.ndarray, pd.DataFrame]:
    """Labels ``[n, H, W]`` and table rows for frames numbered ``first, first + 1, ...``."""
    labels = np.zeros(frames.shape[:3], dtype=LABEL_DTYPE)
    tables = []
    for k, frame in enumerate(frames):
        result = segment_frame(segmenter, frame, job.prompt, job.options)
        labels[k] = result.to_labels(LABEL_DTYPE)
        tables.append(frame_table(labels[k], result, first + k))
    return labels, pd.concat(tables, ignore_index=True)


def _output_shape(source: ImageSource) -> tuple[int, ...]:
    return (source.n_frames, *source.frame_shape) if source.is_stack else source.frame_shape


# ------------------------------------------------------------------------------------- the tasks
def segment_item(job: Job, source: ImageSource, paths: ItemPaths) -> TaskReport:
    """Segment every frame of ``source`` in this task and write its outputs."""
    began = time.perf_counter()
    segmenter = _prepared(job)
    labels, table = label_frames(segmenter, source.read_frames(), 0, job)
    write_labels(paths.labels, iter(labels), _output_shape(source))
    write_table(table, paths.table)
    return TaskReport(source.name, len(labels), len(table), time.perf_counter() - began)


def segment_chunk(job: Job, source: ImageSource, paths: ItemPaths, start: int, stop: int) -> TaskReport:
    """Segment frames ``start..stop-1`` of a split stack into a part file (skipped if it exists)."""
    began = time.perf_counter()
    target = part_path(paths.partial, start, stop)
    if target.exists():
        return TaskReport(source.name, 0, 0, 0.0)
    labels, table = label_frames(_prepared(job), source.read_frames(start, stop), start, job)
    save_part(target, labels, table)
    return TaskReport(source.name, stop - start, len(table), time.perf_counter() - began)


def assemble_item(source: ImageSource, paths: ItemPaths, bounds: list[tuple[int, int]],
                  *chunks: TaskReport) -> TaskReport:
    """Join the parts of a split stack (``chunks`` only orders this task after them)."""
    began = time.perf_counter()
    parts = [part_path(paths.partial, start, stop) for start, stop in bounds]
    tables: list[pd.DataFrame] = []

    def frames() -> Iterator[np.ndarray]:
        for part in parts:
            labels, table = load_part(part)
            tables.append(table)
            yield from labels

    write_labels(paths.labels, frames(), _output_shape(source))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(COLUMNS))
    write_table(table, paths.table)
    for part in parts:
        part.unlink()
    _remove_empty(paths)
    return TaskReport(source.name, 0, len(table), time.perf_counter() - began)


class _LazyFrames:
    """Frames of a source read one at a time (what :func:`propagate` indexes)."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.n_frames

    def __getitem__(self, index: int) -> np.ndarray:
        return self.source.read_frames(index, index + 1)[0]


def seeds_for(segmenter: Segmenter, frame: np.ndarray, prompt: PromptSpec, options: RunOptions) -> Segmentation:
    """The objects propagation starts from: the seed label image's ids, or one object per click."""
    if prompt.seed_labels is not None:
        labels = np.asarray(prompt.seed_labels)
        if labels.shape != frame.shape[:2]:
            raise ValueError(f"seed labels have shape {labels.shape}, the frames are {frame.shape[:2]}")
        ids = np.unique(labels[labels != 0]).astype(np.int64)
        n = len(ids)
        return Segmentation.from_labels(positions_of(labels, ids), scores=np.ones(n, np.float32),
                                        class_names=[""] * n, class_scores=np.ones(n, np.float32), object_ids=ids)
    segmenter.set_image(frame, normalize=options.normalize)
    return segmenter.predict([ObjectPrompt(points=[p]) for p in np.asarray(prompt.seed_points)])


def propagate_labels(segmenter: Segmenter, frames, job: Job) -> Iterator[tuple[int, np.ndarray, pd.DataFrame]]:
    """``(frame index, labels [H, W], table rows)`` in propagation order (start frame first)."""
    prompt = job.prompt
    seeds = seeds_for(segmenter, frames[prompt.start_frame], prompt, job.options)
    for index, result in segmenter.propagate(frames, prompt.start_frame, seeds, direction=prompt.direction,
                                             stop_iou=prompt.stop_iou, min_score=prompt.min_score,
                                             max_step=prompt.max_step,
                                             normalize=job.options.normalize):
        labels = result.to_labels(LABEL_DTYPE)
        yield index, labels, frame_table(labels, result, index)


def propagate_item(job: Job, source: ImageSource, paths: ItemPaths) -> TaskReport:
    """Propagate the seeds through the whole stack, in order, in this one task.

    Label frames go to a disk-backed scratch array (frames are visited in propagation order, not
    in index order); frames the objects never reach stay 0.
    """
    began = time.perf_counter()
    segmenter = _prepared(job)
    paths.partial.mkdir(parents=True, exist_ok=True)
    scratch_path = paths.partial / "propagation.npy"
    shape = (source.n_frames, *source.frame_shape)
    scratch = np.lib.format.open_memmap(scratch_path, mode="w+", dtype=LABEL_DTYPE, shape=shape)
    tables, visited = [], 0
    for index, labels, table in propagate_labels(segmenter, _LazyFrames(source), job):
        scratch[index] = labels
        tables.append(table)
        visited += 1
    write_labels(paths.labels, iter(scratch), shape)
    del scratch
    table = pd.concat(tables, ignore_index=True).sort_values(["frame", "id"], kind="stable", ignore_index=True)
    write_table(table, paths.table)
    scratch_path.unlink()
    _remove_empty(paths)
    return TaskReport(source.name, visited, len(table), time.perf_counter() - began)


def _remove_empty(paths: ItemPaths) -> None:
    for folder in (paths.partial, paths.partial.parent):
        try:
            folder.rmdir()
        except OSError:  # not empty (other items' parts) or already gone
            pass
