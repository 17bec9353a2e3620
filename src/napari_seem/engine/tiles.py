"""Automatic mode and text search on a large field, tile by tile.

SEEM sees an image at a fixed working size: the official checkpoints resize it so its short side
is 512 px, so on a 4096 x 4096 field a 12 px nucleus shrinks to 1.5 px and is lost. Cut into
tiles, every part of the field is seen at about its own scale (a 512 px tile stays 512 px).

The rules:

* the image's intensities are normalised once, over the whole field, so every tile is seen with
  the same contrast (a tile with only background is not stretched into noise);
* tiles of ``tile`` x ``tile`` px overlap their neighbours by ``overlap`` px; the tiles' *cores*
  (each tile less half of every overlap it has with a neighbour) cover the field exactly once;
* an object is taken from the tile whose core holds its centroid, so an object in an overlap is
  taken once; one that shares more than half of its pixels with objects already taken (the same
  object, seen a little differently from two tiles) is dropped, and the others paint only pixels
  still free. An object is whole in the tile that takes it when ``overlap`` is at least its
  diameter.

The result is one label image over the whole field with the objects' class names and scores,
like :meth:`Segmenter.segment_everything`; it carries no memory (each tile is its own image).
"""
from __future__ import annotations

from itertools import product
from typing import TYPE_CHECKING, Generator, Sequence

import numpy as np

from .image import Normalize, to_rgb_255
from .result import Segmentation, positions_of
from .vocabulary import Vocabulary

if TYPE_CHECKING:
    from .segmenter import Segmenter

#: tile side (px of the image) for a segmenter that works at the image's own size (short_side None,
#: the shipped model): the size of its training images. Other segmenters: their short side.
NATIVE_TILE = 256
#: default overlap of neighbouring tiles (px of the image)
DEFAULT_OVERLAP = 64
#: an object sharing more than this share of its pixels with objects already taken is dropped
MAX_SHARED = 0.5


def default_tile(segmenter: "Segmenter") -> int:
    """The tile side a segmenter sees at about the scale it works at: its short side (512 px for
    the official models), or :data:`NATIVE_TILE` when it works at the image's own size; with a
    ``scale``, the image pixels that make that many model pixels."""
    working = int(segmenter.short_side) if segmenter.short_side else NATIVE_TILE
    scale = getattr(segmenter, "scale", None)
    return working if scale is None else max(32, round(working / scale))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """First pixel of each tile along an axis of ``length`` px (the last tile ends at the edge)."""
    if length <= tile:
        return [0]
    step = tile - overlap
    return list(range(0, length - tile, step)) + [length - tile]


def tile_cores(starts: Sequence[int], tile: int, length: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each tile's core along an axis: split at the middle of every overlap."""
    ends = [min(s + tile, length) for s in starts]
    bounds = [0] + [(starts[i + 1] + ends[i]) // 2 for i in range(len(starts) - 1)] + [length]
    return list(zip(bounds[:-1], bounds[1:]))


def iter_tiled(
    segmenter: "Segmenter",
    image: np.ndarray,
    *,
    text: str | None = None,
    vocabulary: Vocabulary | Sequence[str] | None = None,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    normalize: Normalize = "auto",
    channel: int | None = None,
    score_threshold: float | None = None,
    overlap_threshold: float | None = None,
) -> Generator[tuple[int, int], None, Segmentation]:
    """:func:`segment_tiled` step by step: yields ``(tiles done, tiles in all)`` after every tile
    (stop iterating to cancel) and returns the :class:`Segmentation` (``StopIteration.value``;
    a napari generator worker emits it as ``returned``)."""
    if text is not None and vocabulary is not None:
        raise ValueError("give a text prompt or a vocabulary, not both")
    if text is not None:
        text = segmenter._check_text(text)
    if tile is None:
        tile = default_tile(segmenter)
    if int(tile) != tile or tile < 32:
        raise ValueError(f"tile must be an integer of at least 32 px, got {tile}")
    if int(overlap) != overlap or not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap must be between 0 and half the tile ({tile // 2} px), got {overlap}")
    vocab = Vocabulary(vocabulary) if vocabulary is not None and not isinstance(vocabulary, Vocabulary) else vocabulary
    rgb = to_rgb_255(image, normalize, channel)  # checks the image; one normalisation for the field
    height, width = rgb.shape[:2]
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    cores = list(product(tile_cores(rows, tile, height), tile_cores(cols, tile, width)))
    positions = np.zeros((height, width), dtype=np.int32)
    names: list[str] = []
    scores: list[float] = []
    class_scores: list[float] = []
    saved = segmenter._image  # the segmenter's current image stays current
    try:
        for done, ((r0, c0), (row_core, col_core)) in enumerate(zip(product(rows, cols), cores), start=1):
            view = rgb[r0:r0 + tile, c0:c0 + tile]
            segmenter.set_image(view, normalize=(0.0, 255.0))
            if text is not None:
                found = segmenter.predict(text=text)
            else:
                found = segmenter.segment_everything(vocabulary=vocab, score_threshold=score_threshold,
                                                     overlap_threshold=overlap_threshold)
            if len(found):
                kept = _take(found, positions[r0:r0 + tile, c0:c0 + tile], (r0, c0), row_core, col_core, len(names))
                names.extend(found.class_names[k] for k in kept)
                scores.extend(float(found.scores[k]) for k in kept)
                class_scores.extend(float(found.class_scores[k]) for k in kept)
            with segmenter._lock:  # between tiles (where a caller may stop for good) the image is the caller's
                segmenter._image = saved
            yield done, len(cores)
    finally:
        with segmenter._lock:
            segmenter._image = saved
    result = Segmentation.from_labels(positions, scores=np.asarray(scores, np.float32), class_names=names,
                                      class_scores=np.asarray(class_scores, np.float32))
    present = np.flatnonzero(result.areas() > 0)  # an object whose pixels were all taken before it
    result = result.select(present) if len(present) < len(result) else result
    result.object_ids = np.arange(1, len(result) + 1, dtype=np.int64)
    return result


def _take(found: Segmentation, region: np.ndarray, origin: tuple[int, int], row_core: tuple[int, int],
          col_core: tuple[int, int], first: int) -> np.ndarray:
    """Paint the objects of one tile that it owns into ``region`` (its window of the field's
    label image, numbered from ``first + 1``); return their indices in ``found``."""
    local = found.positions() if found.compact else positions_of(found.to_labels(), found.object_ids)
    n = len(found)
    flat = local.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:n + 1].astype(np.float64)
    rr, cc = np.indices(local.shape)
    mean_row = origin[0] + np.bincount(flat, weights=rr.ravel(), minlength=n + 1)[1:n + 1] / np.maximum(area, 1)
    mean_col = origin[1] + np.bincount(flat, weights=cc.ravel(), minlength=n + 1)[1:n + 1] / np.maximum(area, 1)
    owned = ((row_core[0] <= mean_row) & (mean_row < row_core[1]) & (col_core[0] <= mean_col) & (mean_col < col_core[1])
             & (area > 0))
    shared = np.bincount(flat[region.ravel() > 0], minlength=n + 1)[1:n + 1]
    kept = np.flatnonzero(owned & (shared <= MAX_SHARED * area))
    lookup = np.zeros(n + 1, dtype=np.int32)
    lookup[kept + 1] = np.arange(first + 1, first + 1 + len(kept))
    new = lookup[local]
    paint = (new > 0) & (region == 0)
    region[paint] = new[paint]
    return kept


def segment_tiled(segmenter: "Segmenter", image: np.ndarray, **kwargs) -> Segmentation:
    """Automatic mode (default) or text search (``text=``) over ``image`` tile by tile.

    Args:
        image: the whole field, any form :meth:`Segmenter.set_image` takes.
        text: a text prompt: every object it names (as ``predict(text=...)``).
        vocabulary: names for automatic mode (default: the segmenter's).
        tile: tile side in image pixels (default :func:`default_tile`: 512 for the official
            models, 256 for the shipped model, which works at the image's own size).
        overlap: pixels shared by neighbouring tiles, at most half a tile (default 64); at least
            the largest object's diameter for every object to be whole.
        normalize, channel: intensity handling, applied once to the whole field.
        score_threshold, overlap_threshold: automatic mode's, per tile (see
            :meth:`Segmenter.segment_everything`).

    Returns:
        a label-image :class:`Segmentation` over the whole field (no memory).
    """
    steps = iter_tiled(segmenter, image, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value
