"""Text search, then a click on each object found: outlines from SEEM's interactive decoder.

Text search finds objects with SEEM's object queries and the panoptic merge; their outlines are
those of a query's mask that also competes with its neighbours for every pixel. SEEM's
interactive decoder, prompted with a click, is trained for exactly one object's outline. So each
object found is decoded again from one click at its centre (the pixel of its mask nearest its
centroid), all objects of a chunk in one decoder pass, and the new mask replaces the found one
where the two agree: the new mask covers at least half of the found one and is at most
:data:`MAX_GROWTH` times its area (a click can also select a larger region, such as the cell
around a nucleus; then the found mask stays). The new masks do not overlap: objects are painted
in order of their score on pixels still free, and one left with less than half of its mask (two
found pieces of one object, now the same object twice) is dropped, and so is one whose free
pixels hug the outline of an object of its class painted before it (a rim that SEEM's found mask
had and the new outline has not: left as an object, it would be a nucleus a cell's click is cut
around).

A cell's centre usually lies on its nucleus, and a click there selects the nucleus. So an object
named ``cell`` (with the segmenter's ``cells_hold_one_nucleus`` and ``nucleus`` in its
vocabulary) is clicked where its mask lies farthest from its outline and from the nuclei text
search finds (dilated by 2 px), in its cytoplasm; its new mask is then cut between its own
nucleus and the others it covers, as a clicked cell's is
(:func:`~napari_seem.engine.connected.cut_at_foreign_nuclei`). Text ``cell``, shipped model, mean
IoU over the true cells: held-out images 9000-9019 (158 cells) 0.649 -> 0.745, the 60 evaluation
images 2000-2059 0.650 -> 0.711.

With the segmenter's outline refiner (:mod:`napari_seem.engine.outline_refiner`), the clicked
objects of its classes are then drawn again at full resolution, as a clicked object is in
``Segmenter.predict``: text ``nucleus``, shipped model, the 60 evaluation images 0.772 -> 0.841.

Every step after the decoder works in a window around the object (its bounding box grown by its
own size on every side), so the cost follows the objects' size, not the image's.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.special import expit

from .connected import CELL, centre_pixel, cut_at_foreign_nuclei, deepest_pixel, keep_prompted_regions
from .device import inference_context
from .image import logits_to_original
from .outline_refiner import refine_outlines, window_for
from .prompts import click_squares
from .result import Segmentation

if TYPE_CHECKING:
    from .segmenter import Segmenter, _ImageState

#: the new mask may be at most this many times the found one's area
MAX_GROWTH = 3.0
#: ... and must cover at least this share of it
MIN_COVER = 0.5
#: an object left with less than this share of its mask after the painting is dropped
MIN_KEPT = 0.5
#: objects x model-side pixels above which text search's objects are not outlined again (the
#: decoder reads each object's click from an image-sized prompt): 512 objects on a 2048 x 2048
#: image, 2,048 on a 1024 x 1024 one. Larger fields: segment them in tiles (``segment_tiled``).
MAX_WORK = 1 << 31
#: image-sized prompts per decoder pass at most (bounded memory)
CHUNK_PIXELS = 1 << 26
#: a cell is clicked at least this far (px) from the nuclei, where its mask allows
NUCLEUS_CLEARANCE = 2
#: an object whose free pixels lie this close (px) to an object of its class painted before it ...
RIM_WIDTH = 2
#: ... at least this share of them, and is at most this share of that object's area ...
RIM_SHARE = 0.8
#: ... is a rim of that object's outline, not an object: dropped (two touching vesicles are not rims)
RIM_MAX_AREA = 0.25


def refine_by_clicks(segmenter: "Segmenter", state: "_ImageState", found: Segmentation, chunk: int = 32) -> Segmentation:
    """``found`` (a label-image result on the current image) with its outlines from a click each.

    Class names and scores stay those of ``found``; an object's memory becomes the logits of its
    click where the click's mask was taken (a later correction starts from that mask).
    """
    positions = found.positions()
    if positions is None or not len(found):
        return found
    padded = tuple(state.features.padded_size)
    if len(found) * padded[0] * padded[1] > MAX_WORK:
        warnings.warn(f"text search found {len(found)} objects on a {padded[0]} x {padded[1]} image: their outlines "
                      "are not refined by a click each (too much work at once); segment_tiled outlines every "
                      "object and sees each tile at the model's scale", RuntimeWarning, stacklevel=3)
        return found
    chunk = max(1, min(chunk, CHUNK_PIXELS // (padded[0] * padded[1])))
    boxes = [found.box(k) for k in range(len(found))]
    present = [k for k, box in enumerate(boxes) if box is not None]
    nuclei = areas = None
    if segmenter._cells_hold_nuclei() and CELL in found.class_names:
        nuclei, areas = segmenter._nucleus_labels(state)
    is_cell = {k: nuclei is not None and found.class_names[k] == CELL for k in present}
    clicks = {k: _inner_point(positions, boxes[k], k + 1, avoid=nuclei if is_cell[k] else None) for k in present}
    masks: dict[int, tuple[tuple[slice, slice], np.ndarray]] = {}  # object -> (window, its final mask there)
    # an outline refiner redraws the clicked objects of its classes
    refined_rows: list[np.ndarray] = []
    row_of: dict[int, int] = {}
    for start in range(0, len(present), chunk):
        part = present[start:start + chunk]
        pos = click_squares(np.array([clicks[k] for k in part]), state.prepared.original_shape,
                            state.prepared.model_shape, padded).to(segmenter.device)
        with segmenter._lock, inference_context(segmenter.device, segmenter.precision):
            out = segmenter.model.predictor(segmenter.model.prepare_decoder(state.features), pos_masks=pos,
                                            generator=segmenter._generator())
            logits = out.selected_masks[0].float().cpu()
        for j, k in enumerate(part):
            window = _window(boxes[k], positions.shape)
            found_mask = positions[window] == k + 1
            window_logits = _window_logits(segmenter, state, logits[j], window)
            new = window_logits > 0
            click = np.zeros_like(new)
            click[clicks[k][0] - window[0].start, clicks[k][1] - window[1].start] = True
            new = keep_prompted_regions(new, click) if new[click].any() else np.zeros_like(new)
            if is_cell[k] and new.any():
                prob = expit(window_logits)
                new = cut_at_foreign_nuclei(new, prob, click, nuclei[window], nucleus_areas=areas)
            refiner = segmenter.refiner_for(found.class_names[k])
            if refiner is not None and new.any():
                new = _redrawn(refiner, segmenter._refiner_image(state), window, new,
                               expit(window_logits), clicks[k])
            area, cover = int(found_mask.sum()), int((new & found_mask).sum())
            if cover >= MIN_COVER * area and new.sum() <= MAX_GROWTH * area:
                masks[k] = (window, new)
                row_of[k] = len(refined_rows)
                refined_rows.append(logits[j].numpy())
            else:
                masks[k] = (window, found_mask)
    return _paint(found, masks, refined_rows, row_of)


def _inner_point(positions: np.ndarray, box: tuple[slice, slice], value: int,
                 avoid: np.ndarray | None = None) -> tuple[int, int]:
    """The pixel of the object nearest its centroid (inside it even when it is not convex); with
    ``avoid`` (``[H, W]``, nonzero: pixels to keep away from, e.g. nuclei), the pixel of the
    object farthest from its outline and from ``avoid`` grown by :data:`NUCLEUS_CLEARANCE` px,
    where any is left."""
    if avoid is not None:
        grown = tuple(slice(max(0, b.start - NUCLEUS_CLEARANCE), b.stop + NUCLEUS_CLEARANCE) for b in box)
        near = ndimage.binary_dilation(avoid[grown] > 0, iterations=NUCLEUS_CLEARANCE)
        inner = (slice(box[0].start - grown[0].start, box[0].stop - grown[0].start),
                 slice(box[1].start - grown[1].start, box[1].stop - grown[1].start))
        free = (positions[box] == value) & ~near[inner]
        if free.any():
            r, c = deepest_pixel(free)
            return r + box[0].start, c + box[1].start
    r, c = centre_pixel(positions[box] == value)
    return r + box[0].start, c + box[1].start


def _redrawn(refiner, rgb01: np.ndarray, window: tuple[slice, slice], mask: np.ndarray, probability: np.ndarray,
             click: tuple[int, int]) -> np.ndarray:
    """``mask`` (inside ``window``) drawn again by the outline refiner from the click ``click``, as
    ``Segmenter._result`` redraws a clicked object (the redrawn mask is kept inside ``window``).
    Only the refiner's window around the mask is handed over (no image-sized arrays per object)."""
    size = refiner.window
    origin = window_for(mask, size)
    if origin is None:  # too large for the refiner: left as it is
        return mask
    h, w = rgb01.shape[-2:]
    top, left = origin[0] + window[0].start, origin[1] + window[1].start
    region = (slice(max(0, top), min(h, top + size)), slice(max(0, left), min(w, left + size)))
    local_mask = _moved(mask, window, region)
    local_probability = _moved(probability.astype(np.float32), window, region)
    clicks = [(np.array([click], np.float64) - (region[0].start, region[1].start), np.zeros((0, 2)))]
    redrawn = refine_outlines(refiner, rgb01[:, region[0], region[1]], local_mask[None], local_probability[None],
                              clicks, [0])[0]
    return _moved(redrawn, region, window)


def _moved(array: np.ndarray, source: tuple[slice, slice], target: tuple[slice, slice]) -> np.ndarray:
    """``array`` (over the image box ``source``) as an array over the image box ``target``: where
    the two boxes overlap its values, elsewhere zeros."""
    out = np.zeros((target[0].stop - target[0].start, target[1].stop - target[1].start), array.dtype)
    r0, r1 = max(source[0].start, target[0].start), min(source[0].stop, target[0].stop)
    c0, c1 = max(source[1].start, target[1].start), min(source[1].stop, target[1].stop)
    if r0 < r1 and c0 < c1:
        out[r0 - target[0].start:r1 - target[0].start, c0 - target[1].start:c1 - target[1].start] = \
            array[r0 - source[0].start:r1 - source[0].start, c0 - source[1].start:c1 - source[1].start]
    return out


def _window(box: tuple[slice, slice], shape: tuple[int, int]) -> tuple[slice, slice]:
    """``box`` grown by its own extent on every side (at least 4 px), clipped to ``shape``."""
    out = []
    for axis, length in zip(box, shape):
        grow = max(4, axis.stop - axis.start)
        out.append(slice(max(0, axis.start - grow), min(length, axis.stop + grow)))
    return tuple(out)  # type: ignore[return-value]


def _window_logits(segmenter: "Segmenter", state: "_ImageState", logits: torch.Tensor,
                   window: tuple[slice, slice]) -> np.ndarray:
    """The object's ``[h/4, w/4]`` decoder logits at the original resolution, inside ``window``:
    what ``Segmenter._result`` computes over the whole image, computed for the window only."""
    prepared = state.prepared
    if tuple(prepared.model_shape) != tuple(prepared.original_shape):  # resized image: the exact full path
        full = logits_to_original(segmenter._to_model_grid(state, logits[None]), prepared.original_shape)[0]
        return full[window].numpy()
    # the 4x bilinear upsampling (align_corners=False) reads each output pixel from the two nearest
    # grid cells on each axis; cropping the grid with 2 cells to spare gives the same values inside
    grid = []
    for axis, cells in zip(window, logits.shape):
        first = max(0, axis.start // 4 - 2)
        last = min(cells, -(-axis.stop // 4) + 2)
        grid.append((first, last))
    (r0, r1), (c0, c1) = grid
    up = F.interpolate(logits[None, None, r0:r1, c0:c1], size=(4 * (r1 - r0), 4 * (c1 - c0)), mode="bilinear",
                       align_corners=False)[0, 0]
    return up[window[0].start - 4 * r0:window[0].stop - 4 * r0, window[1].start - 4 * c0:window[1].stop - 4 * c0].numpy()


def _is_rim(free: np.ndarray, other: np.ndarray, other_area: int) -> bool:
    """Whether ``free`` (an object's pixels) is a rim of ``other`` (an object of its class, of
    ``other_area`` px in all): at least :data:`RIM_SHARE` of it within :data:`RIM_WIDTH` px of
    ``other``, and at most :data:`RIM_MAX_AREA` of its area."""
    size = int(free.sum())
    if not other.any() or size > RIM_MAX_AREA * other_area:
        return False
    near = ndimage.binary_dilation(other, iterations=RIM_WIDTH)
    return int((free & near).sum()) >= RIM_SHARE * size


def _paint(found: Segmentation, masks: dict, refined_rows: list[np.ndarray], row_of: dict[int, int]) -> Segmentation:
    """One label image from the final masks, higher scores first; objects left with less than
    :data:`MIN_KEPT` of their mask, and rims of an object of their class (:func:`_is_rim`), are
    dropped."""
    positions = np.zeros(found.shape, dtype=np.int32)
    kept: list[int] = []
    painted: list[int] = []  # each kept object's area
    for k in sorted(masks, key=lambda k: (-float(found.scores[k]), k)):
        window, mask = masks[k]
        free = mask & (positions[window] == 0)
        if free.sum() < MIN_KEPT * mask.sum() or not free.any():
            continue
        near = np.unique(positions[window][ndimage.binary_dilation(free, iterations=RIM_WIDTH)])
        same_class = [int(i) for i in near if i and found.class_names[kept[i - 1]] == found.class_names[k]]
        if any(_is_rim(free, positions[window] == i, painted[i - 1]) for i in same_class):
            continue
        kept.append(k)
        painted.append(int(free.sum()))
        positions[window][free] = len(kept)
    order = np.argsort(kept, kind="stable")  # back to the found objects' order
    lookup = np.zeros(len(kept) + 1, dtype=np.int32)
    lookup[order + 1] = np.arange(1, len(kept) + 1)
    kept_sorted = [kept[i] for i in order]
    old_rows, old_index = found.memory_rows()
    memory = memory_index = None
    if old_rows is not None:
        base = len(old_rows)
        memory = np.concatenate([old_rows, np.stack(refined_rows)]) if refined_rows else old_rows
        memory_index = np.array([base + row_of[k] if k in row_of else int(old_index[k]) for k in kept_sorted],
                                dtype=np.int64)
    idx = np.asarray(kept_sorted, dtype=np.int64)
    return Segmentation.from_labels(
        lookup[positions], scores=found.scores[idx], class_names=[found.class_names[k] for k in kept_sorted],
        class_scores=found.class_scores[idx], memory=memory, memory_index=memory_index,
        object_ids=np.arange(1, len(kept_sorted) + 1),
    )
