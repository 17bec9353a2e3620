"""The model work of the widget, run in napari thread workers (never on the GUI thread).

Each job is a plain function or generator taking the segmenter and numpy inputs; :func:`start`
wraps it in a :func:`napari.qt.threading.create_worker` worker. Generator jobs yield once per
unit of work (a frame), so ``worker.quit()`` stops them between frames while everything already
yielded has been delivered to the GUI thread and written. Pixel reads of lazy (dask/zarr) layers
happen here too, through the ``read`` callables, not on the GUI thread.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..engine.prompts import ObjectPrompt
from ..engine.result import Segmentation

Reader = Callable[[], np.ndarray]


def load_segmenter(name_or_path: str, device: str = "auto"):
    """Build a ``Segmenter`` from a preset name or checkpoint file (may download weights)."""
    from ..engine import Segmenter

    return Segmenter.from_pretrained(name_or_path=name_or_path, device=device)


def predict(
    segmenter,
    read: Reader,
    prompts: list[ObjectPrompt],
    text: str | None,
    previous: Segmentation | None,
    normalize: Any = "auto",
    channel: int | None = None,
) -> Segmentation:
    """Encode the plane (cached by content in the engine) and segment the prompted objects."""
    segmenter.set_image(read(), normalize=normalize, channel=channel)
    return segmenter.predict(prompts or None, text=text or None, previous=previous)


def segment_everything(segmenter, read: Reader, normalize: Any = "auto", channel: int | None = None) -> Segmentation:
    """Encode the plane and run automatic (panoptic) segmentation with class names."""
    segmenter.set_image(read(), normalize=normalize, channel=channel)
    return segmenter.segment_everything()


def segment_tiled(
    segmenter,
    read: Reader,
    text: str | None,
    tile: int | None,
    overlap: int,
    normalize: Any = "auto",
    channel: int | None = None,
) -> Iterator[tuple[int, int]]:
    """Automatic mode (``text`` None) or text search on the plane tile by tile: yields
    ``(tiles done, tiles in all)`` after each tile, returns the plane's result (``returned``)."""
    from ..engine.tiles import iter_tiled

    result = yield from iter_tiled(segmenter, read(), text=text or None, tile=tile, overlap=overlap,
                                   normalize=normalize, channel=channel)
    return result


def propagate(
    segmenter,
    read_frames: Reader,
    start: int,
    seeds: Segmentation,
    direction: str,
    hold_probability: float | None = None,
) -> Iterator[tuple[int, Segmentation]]:
    """Yield ``(frame_index, result)`` for each frame the engine propagates the seeds to."""
    frames = read_frames()
    for index, result in segmenter.propagate(frames, start=start, seeds=seeds, direction=direction,
                                             hold_probability=hold_probability):
        yield int(index), result


def find_similar(
    segmenter,
    reference_image: np.ndarray,
    reference_mask: np.ndarray,
    targets: Iterable[tuple[Any, Reader]],
) -> Iterator[tuple[Any, Segmentation]]:
    """Yield ``(key, result)``: objects like the reference one in each target plane."""
    for key, read in targets:
        yield key, segmenter.find_similar(reference_image, reference_mask, read())


def set_vocabulary(segmenter, names: list[str]) -> list[str]:
    """Set the class names (their text embeddings are computed here) and return them."""
    segmenter.set_vocabulary(names)
    return list(segmenter.vocabulary)


def make_worker(job: Callable, *args, **kwargs):
    """A napari thread worker (not yet started) that runs ``job(*args, **kwargs)``.

    Connect its signals (``returned``, ``yielded``, ``errored``, ``finished``), then call
    ``worker.start()``. Generator jobs give a ``GeneratorWorker`` that ``quit()`` stops.
    """
    from napari.qt.threading import create_worker

    return create_worker(job, *args, _start_thread=False, **kwargs)
