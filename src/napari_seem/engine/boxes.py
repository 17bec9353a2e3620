"""A box marks one object: the object that fills it, not the rectangle.

SEEM reads a box as a filled area prompt, like a painted mask. Its training prompts are clicks,
scribbles, polygons and masks drawn *inside* objects, so a box, which always takes in some
background and often part of a neighbour, is read as "this rectangle": around a nucleus inside
its cell, the mask comes out rectangular or as the cell. A user who draws a box means the object
inside it. So, when one box is an object's only positive prompt, the engine

* decodes candidate clicks instead of the box (:func:`candidate_points`): at the box's centre,
  and a quarter of its height or width from the centre in each direction, with the object's
  negative prompts; all in the decoder pass of the other objects, no new encoding;
* takes the centre click's object, unless a candidate at least twice its area (a larger object
  around it: the cell around a nucleus) fits the box better: where the centre's object is small
  in the box, the candidate at least half inside the box that best matches it; where it spans
  the box, only one 95 % inside it whose bounding box matches the box much better
  (:func:`choose_candidate`);
* clips the mask to the box, 1 px of slack around it (:func:`clip_to_box`): the box says where the
  object ends, which cuts off leaks into neighbours.

With a previous result as memory (a second round), each candidate refines the object's previous
mask, and the choice is made again. When the object also has positive clicks or strokes (the box
was drawn, then corrected with clicks), SEEM reads those without the box: the clicks say where
the object is. In every case the mask is clipped to the box, grown to take in any positive click
outside it.

Measured with the shipped model on held-out images 9000-9019 (139 nuclei, 158 cells; boxes around
each object's true extent; mean IoU for nuclei / cells), as SEEM reads boxes against this rule:
tight boxes 0.753 / 0.807 against 0.828 / 0.828; 3 px looser 0.422 / 0.778 against 0.811 / 0.841;
20 % looser on each side 0.348 / 0.674 against 0.777 / 0.837; edges moved by -3..3 px at random
0.720 / 0.802 against 0.810 / 0.778. (A click at the box's centre alone: 0.81 / 0.34, a click on a
cell usually falls on its nucleus.) The thresholds were chosen there, over the candidates'
recorded masks (a grid of 864 rules; the best candidate for each box, an oracle, gives 0.855 on
average over those eight numbers, this rule 0.814, the first rule, "twice the area and 90 %
inside", 0.808), and checked on images 9030-9049: 0.792 -> 0.804 on average (SEEM's reading of
the boxes: 0.65).
"""
from __future__ import annotations

import numpy as np

from .prompts import NEGATIVE, POSITIVE, ObjectPrompt

#: candidates away from the centre, as a share of the box's height / width
OFFSET = 0.25
#: candidate clicks per box: the centre and one a quarter of the box away in each direction
N_CANDIDATES = 5
#: a candidate replaces the centre click's object only when at least this many times its area
MIN_GROWTH = 2.0
#: the centre click's object "spans the box" when its bounding box (inside the box) is at least
#: this share of the box's height and width (square root of the area ratio)
SPANS_BOX = 0.6
#: a candidate that replaces an object spanning the box must lie this much inside the box ...
MIN_INSIDE_SPANNING = 0.95
#: ... and match the box better by this much (IoU of its bounding box with the box)
MIN_BETTER_FIT = 0.2
#: a candidate that replaces an object small in the box must lie this much inside the box
MIN_INSIDE_SMALL = 0.5
#: pixels of slack around the box when the mask is clipped to it
MARGIN = 1.0


def single_box(prompt: ObjectPrompt) -> np.ndarray | None:
    """The box ``(row0, col0, row1, col1)`` (sorted corners) when it is the object's only
    positive AREA prompt (one box; no polygon, no mask), else None. Clicks and strokes may come
    with it."""
    if len(prompt.boxes) != 1 or prompt.polygons or (prompt.mask is not None and np.any(prompt.mask)):
        return None
    r0, c0, r1, c1 = prompt.boxes[0]
    return np.array([min(r0, r1), min(c0, c1), max(r0, r1), max(c0, c1)], dtype=np.float64)


def without_box(prompt: ObjectPrompt) -> ObjectPrompt:
    """The same prompt without its boxes (clicks, strokes, negative areas kept)."""
    return ObjectPrompt(points=prompt.points, point_labels=prompt.point_labels, strokes=prompt.strokes,
                        stroke_labels=prompt.stroke_labels, negative_mask=prompt.negative_mask)


def candidate_points(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``[N_CANDIDATES, 2]`` (row, col): the box's centre, then the points a quarter of its
    height above and below it and a quarter of its width left and right of it; all inside the
    image ``shape``."""
    r0, c0, r1, c1 = box
    rc, cc = (r0 + r1) / 2, (c0 + c1) / 2
    dr, dc = OFFSET * (r1 - r0), OFFSET * (c1 - c0)
    points = np.array([[rc, cc], [rc - dr, cc], [rc + dr, cc], [rc, cc - dc], [rc, cc + dc]])
    return np.clip(points, 0, [shape[0] - 1, shape[1] - 1])


def candidate_prompts(prompt: ObjectPrompt, box: np.ndarray, shape: tuple[int, int]) -> list[ObjectPrompt]:
    """One prompt per candidate click, each with the object's negative clicks, strokes and area."""
    negatives = prompt.points[prompt.point_labels == NEGATIVE]
    strokes = [s for s, lbl in zip(prompt.strokes, prompt.stroke_labels) if lbl != POSITIVE]
    out = []
    for point in candidate_points(box, shape):
        points = np.vstack([point[None], negatives])
        labels = np.array([POSITIVE] + [NEGATIVE] * len(negatives), dtype=np.int64)
        out.append(ObjectPrompt(points=points, point_labels=labels, strokes=strokes,
                                stroke_labels=[NEGATIVE] * len(strokes), negative_mask=prompt.negative_mask))
    return out


def _box_slices(box: np.ndarray, shape: tuple[int, int], margin: float) -> tuple[slice, slice]:
    r0 = int(max(np.floor(box[0] - margin), 0))
    c0 = int(max(np.floor(box[1] - margin), 0))
    r1 = int(min(np.ceil(box[2] + margin), shape[0] - 1))
    c1 = int(min(np.ceil(box[3] + margin), shape[1] - 1))
    return slice(r0, r1 + 1), slice(c0, c1 + 1)


def _bbox_iou(mask: np.ndarray, box: np.ndarray) -> float:
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if not len(rows):
        return 0.0
    a = (rows[0], cols[0], rows[-1], cols[-1])
    inter = (max(0.0, min(a[2], box[2]) - max(a[0], box[0]) + 1)
             * max(0.0, min(a[3], box[3]) - max(a[1], box[1]) + 1))
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    return float(inter / (area_a + area_b - inter))


def _spans(mask: np.ndarray, box: np.ndarray) -> float:
    """Square root of the share of the box that the bounding box of ``mask`` inside it covers."""
    region = _box_slices(box, mask.shape, 0)
    inside = mask[region]
    rows, cols = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
    if not len(rows):
        return 0.0
    covered = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return float(np.sqrt(covered / inside.size))


def choose_candidate(masks: np.ndarray, box: np.ndarray) -> int:
    """Index of the candidate mask (``[N_CANDIDATES, H, W]`` bool, in :func:`candidate_points`' order) that is
    the boxed object. The centre click's, unless a candidate at least :data:`MIN_GROWTH` times
    its area (a larger object around it) fits the box better:

    * when the centre click's object is small in the box (its bounding box less than
      :data:`SPANS_BOX` of the box's size), the box was drawn around something larger: the
      candidate at least :data:`MIN_INSIDE_SMALL` inside the box (1 px slack; a cell leaking into
      its neighbours) whose bounding box best matches the box;
    * when it spans the box, only a candidate at least :data:`MIN_INSIDE_SPANNING` inside whose
      bounding box matches the box better by :data:`MIN_BETTER_FIT` (IoU): a loose box around a
      nucleus is not its cell's, even where the image's edge cuts the cell to fit it.
    """
    areas = masks.reshape(len(masks), -1).sum(1)
    inside_box = _box_slices(box, masks.shape[1:], MARGIN)
    small = _spans(masks[0], box) < SPANS_BOX
    best = 0
    best_fit = -1.0 if small else _bbox_iou(masks[0], box) + MIN_BETTER_FIT
    for k in range(1, len(masks)):
        if areas[k] < MIN_GROWTH * areas[0]:
            continue
        if masks[k][inside_box].sum() < (MIN_INSIDE_SMALL if small else MIN_INSIDE_SPANNING) * areas[k]:
            continue
        fit = _bbox_iou(masks[k], box)
        if fit > best_fit:
            best, best_fit = k, fit
    return best


def clip_to_box(mask: np.ndarray, box: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """``mask`` outside the box (1 px slack) removed; with ``keep`` (``[H, W]`` bool, e.g. the
    positive clicks), the box is first grown to take in its pixels that lie in the mask."""
    if keep is not None:
        marked = keep & mask
        if marked.any():
            rows, cols = np.nonzero(marked.any(1))[0], np.nonzero(marked.any(0))[0]
            box = np.array([min(box[0], rows[0]), min(box[1], cols[0]), max(box[2], rows[-1]), max(box[3], cols[-1])])
    out = np.zeros_like(mask)
    region = _box_slices(box, mask.shape, MARGIN)
    out[region] = mask[region]
    return out
