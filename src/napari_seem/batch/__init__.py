"""Batch segmentation at scale: folders, large stacks and time-lapses on dask.distributed.

The engine (:mod:`napari_seem.engine`) does the segmentation; this package plans the items, runs
one task per image / stack chunk / propagated stack on dask workers (each worker keeps one model)
and writes label images and per-object tables. See ``docs/batch.md``; the CLI is
``napari-seem segment``.
"""
from .io import ImageSource, InputError, discover, probe, read_image
from .outputs import ItemPaths, read_labels, read_table
from .run import BatchSummary, OutputExistsError, default_workers, segment_batch
from .spec import Job, ModelSpec, PromptSpec, RunOptions

__all__ = [
    "segment_batch", "BatchSummary", "ModelSpec", "PromptSpec", "RunOptions", "Job",
    "ImageSource", "InputError", "OutputExistsError", "ItemPaths", "discover", "probe",
    "read_image", "read_labels", "read_table", "default_workers",
]
