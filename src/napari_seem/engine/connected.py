"""One object, one connected region: the engine's rules on top of SEEM's masks.

SEEM scores every pixel against an object's embedding, so a mask can also light up other objects
that look alike elsewhere in the image (many nuclei look the same). The engine therefore

* keeps, per **prompted** object (a click, box, stroke or painted mask marks ONE object), the
  connected regions of its mask that touch the object's positive prompt; when none touches it
  (the click fell just beside the predicted mask), the region nearest to the prompt;
* splits, in **automatic mode and text search**, a "thing" segment made of separate regions into
  one object per region; crumbs are dropped: pieces under 5 % of the segment's largest region,
  or smaller than one cell of the decoder's mask grid (4 x 4 pixels at model resolution);
* merges, in the same modes, touching segments of one "thing" class whose object queries
  describe the same object (their own masks overlap with IoU >= 0.5): SEEM's panoptic merge gives
  each pixel to one query, so two queries on one nucleus would otherwise split it in two;
* cuts off, per prompted object, the part of its mask that a **negative** prompt falls in: the
  mask is flooded from the positive and the negative prompt pixels inside it (seeded watershed
  on the mask's confidence), and what is reached first from a negative seed leaves the mask. A
  negative click on a leak into a neighbour thus removes the leak even where the model alone
  barely reacts to it;
* grows, per prompted object, its mask at a **positive click or stroke** that fell outside it:
  the clicked pixels join the mask, with the pixels around them (within the click's distance to
  the mask plus 2 px) that the model finds at least as likely to be the object as the clicked
  ones, connected to them. A click on a thin missed rim along an outline thus adds that rim,
  where the model alone often does not react to it;
* cuts, per prompted object named ``nucleus``, its mask along the line through each **negative
  click**, square to the direction from the object's first positive click (else its mask's
  centroid): a nucleus is convex, so a negative click on a thin rim of excess along its outline
  means that the nucleus ends before it, on that whole side (``cut_beyond_negative_clicks``);
  and grows it on the side of each new **positive click** outside its previous mask, by the
  click's distance to that mask, up to the line through the click
  (``grow_toward_positive_clicks``): a click on a thin missed rim means the rim is missing on
  that whole side. An object named ``cell``, not convex but star-shaped around where it was
  first clicked, grows so within 30 degrees of the click's direction;
* cuts, per prompted object named ``cell``, its mask between the nuclei it covers: a cell holds
  one nucleus, so nuclei (found by text search) lying mostly inside a cell's mask that no
  positive prompt marks, besides the one nearest to the prompt, belong to neighbouring cells the
  mask leaked into; the part of the mask reached first from them (seeded watershed on the mask's
  confidence, as for a negative click) is cut off. A positive click on a second nucleus keeps it
  (a cell with two nuclei);
* splits, per prompted object named ``cell``, its mask at a **neck**: a mask that has spread over
  a touching neighbour is two blobs joined where the mask narrows (peaks of its distance
  transform, a watershed between them, a border less deep than 0.7 of the smaller blob's depth);
  the blobs holding a positive click stay, or, for a mask prompt (propagation), those lying mostly
  inside it (``split_touching_cells``). Nuclei or not: a neighbour without a nucleus of its own
  is cut off too.

Regions are 8-connected. Objects that really consist of separate pieces can keep them all: prompt
each piece (a click on each), or switch the rules off (``Segmenter(connected_objects=False)``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from .prompts import resample_nearest

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

#: how far (degrees) around a positive click's direction a cell grows toward it (a nucleus: its
#: whole side, 90)
CELL_GROWTH_HALF_ANGLE = 30.0
#: the class names of the rules that give a cell one nucleus (``cut_at_foreign_nuclei``,
#: ``split_between_nuclei``; ``Segmenter(cells_hold_one_nucleus=...)``)
CELL, NUCLEUS = "cell", "nucleus"
#: smallest part of a cell's mask, in pixels at model resolution, that ``split_touching_cells``
#: takes for a touching neighbour
NECK_MIN_AREA = 150.0
#: a cell's mask splits between two blobs where the border between them is shallower than this
#: share of the smaller blob's depth (``split_touching_cells``)
NECK_RATIO = 0.7


def keep_prompted_regions(mask: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """The connected regions of ``mask`` that touch ``prompt`` (else the one nearest to it).

    Args:
        mask: ``[H, W]`` bool predicted mask.
        prompt: ``[h, w]`` bool positive prompt region (clicks, strokes, boxes, polygons, masks)
            on the same image, at ``mask``'s resolution or a coarser one (the model's: the
            prompt masks SEEM read, so nothing is rasterised twice); a prompt pixel touches the
            region under its centre.

    Returns:
        ``[H, W]`` bool, a subset of ``mask``; ``mask`` itself when it is empty, has a single
        region, or the prompt is empty (an object refined with negative clicks only).
    """
    if mask.ndim != 2 or prompt.ndim != 2:
        raise ValueError(f"mask {mask.shape} and prompt {prompt.shape} must both be 2D")
    if not mask.any() or not prompt.any():
        return mask
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n <= 1:
        return mask
    seen = resample_nearest(labels, prompt.shape)  # the region under each prompt pixel's centre
    touched = np.unique(seen[prompt])
    touched = touched[touched > 0]
    if touched.size:
        return np.isin(labels, touched)
    present = np.unique(seen)
    present = present[present > 0]
    if not present.size:  # every region is finer than the prompt's grid
        return mask
    distance = ndimage.distance_transform_edt(~prompt)
    nearest = np.asarray(ndimage.minimum(distance, seen, present))
    return labels == present[int(np.argmin(nearest))]


def keep_prompted_regions_all(masks: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """:func:`keep_prompted_regions` for ``[N, H, W]`` masks and their ``[N, h, w]`` prompts."""
    if len(masks) != len(prompts):
        raise ValueError(f"{len(masks)} masks but {len(prompts)} prompts")
    return np.stack([keep_prompted_regions(m, p) for m, p in zip(masks, prompts)]) if len(masks) else masks


def split_regions(masks: np.ndarray, splittable: np.ndarray, min_fraction: float = 0.05,
                  min_area: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One mask per connected region of the ``splittable`` masks (the others stay whole).

    :func:`split_label_regions` on a stack of masks; see there. Empty masks are dropped.

    Args:
        masks: ``[N, H, W]`` bool, non-overlapping.

    Returns:
        ``([M, H, W]`` masks, ``[M]`` index of the source mask of each)``, in source order.
    """
    pieces, source = split_label_regions(stack_to_positions(masks), splittable, min_fraction, min_area)
    out = np.zeros((len(source), *masks.shape[1:]), dtype=bool)
    for i, box in enumerate(ndimage.find_objects(pieces, max_label=len(source))):
        out[i][box] = pieces[box] == i + 1
    return out, source


def split_label_regions(segments: np.ndarray, splittable: np.ndarray, min_fraction: float = 0.05,
                        min_area: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One object per connected region of the ``splittable`` segments of a label image.

    Every segment is worked on inside its own bounding box, and the output is one label image:
    a large field with thousands of objects costs one image, not one image per object.

    Args:
        segments: ``[H, W]`` int, ``k + 1`` where segment ``k`` lies, 0 elsewhere.
        splittable: ``[S]`` bool, which segments to split (e.g. the "thing" classes); the others
            stay whole.
        min_fraction: pieces smaller than this share of their segment's largest region are dropped.
        min_area: pieces of a split segment smaller than this (pixels) are dropped.

    Returns:
        ``([H, W]`` int32, ``i + 1`` where piece ``i`` lies; ``[M]`` index of the source segment
        of each piece)``; pieces in source order, a segment's pieces in raster order of their
        first pixel. Segments without a pixel give no piece.
    """
    out = np.zeros(segments.shape, dtype=np.int32)
    source: list[int] = []
    for k, box in enumerate(ndimage.find_objects(segments, max_label=len(splittable))):
        if box is None:
            continue
        inside = segments[box] == k + 1
        regions, n = ndimage.label(inside, structure=_EIGHT_CONNECTED) if splittable[k] else (None, 1)
        if n <= 1:
            out[box][inside] = len(source) + 1
            source.append(k)
            continue
        areas = np.bincount(regions.ravel(), minlength=n + 1)[1:]
        kept = np.flatnonzero((areas >= min_fraction * areas.max()) & (areas >= min_area))
        lookup = np.zeros(n + 1, dtype=np.int32)
        lookup[kept + 1] = np.arange(len(source) + 1, len(source) + 1 + len(kept))
        out[box][inside] = lookup[regions[inside]]
        source.extend([k] * len(kept))
    return out, np.asarray(source, dtype=np.int64)


def stack_to_positions(masks: np.ndarray) -> np.ndarray:
    """``[H, W]`` int32 label image, ``k + 1`` where mask ``k`` of non-overlapping ``[N, H, W]`` lies."""
    positions = np.zeros(masks.shape[1:], dtype=np.int32)
    for k, mask in enumerate(masks):
        positions[mask] = k + 1
    return positions


def merge_duplicates(masks: np.ndarray, query_masks: np.ndarray, classes: np.ndarray, mergeable: np.ndarray,
                     iou_threshold: float = 0.5) -> list[list[int]]:
    """:func:`merge_duplicate_labels` on a stack of non-overlapping ``[N, H, W]`` masks."""
    return merge_duplicate_labels(stack_to_positions(masks), query_masks, classes, mergeable, iou_threshold)


def merge_duplicate_labels(segments: np.ndarray, query_masks: np.ndarray, classes: np.ndarray,
                           mergeable: np.ndarray, iou_threshold: float = 0.5) -> list[list[int]]:
    """Groups of segments that are one object: same mergeable class, touching (8-connected), and
    made by queries whose own masks overlap with IoU >= ``iou_threshold``.

    Args:
        segments: ``[H, W]`` int, ``k + 1`` where segment ``k`` lies (e.g. of a panoptic merge).
        query_masks: ``[N, h, w]`` bool, the own mask of each segment's query (any resolution,
            the same for all).
        classes: ``[N]`` class index of each segment.
        mergeable: ``[N]`` bool, which segments may merge (the "thing" classes).

    Returns:
        Index lists, one per object, each sorted, in order of their first segment.
    """
    n = len(classes)
    if n == 0:
        return []
    own = query_masks.reshape(n, -1).astype(np.float32)
    inter = own @ own.T
    area = own.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None] - inter, 1.0)
    parent = list(range(n))
    boxes = ndimage.find_objects(segments, max_label=n)

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for a, b in zip(*np.nonzero(np.triu(iou >= iou_threshold, 1))):
        if not (mergeable[a] and mergeable[b] and classes[a] == classes[b]) or root(a) == root(b):
            continue
        if boxes[a] is None or boxes[b] is None:
            continue
        box = tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(boxes[a], boxes[b]))
        inside = segments[box]
        if (ndimage.binary_dilation(inside == a + 1, structure=_EIGHT_CONNECTED) & (inside == b + 1)).any():
            parent[max(root(a), root(b))] = min(root(a), root(b))
    groups: dict[int, list[int]] = {}
    for k in range(n):
        groups.setdefault(root(k), []).append(k)
    return list(groups.values())


def bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The smallest ``(rows, cols)`` slices holding every pixel of a non-empty ``[H, W]`` mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def centre_pixel(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of a non-empty ``mask`` nearest to its centroid (inside it, also when it is not
    convex)."""
    rows, cols = np.nonzero(mask)
    k = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return int(rows[k]), int(cols[k])


def deepest_pixel(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of a non-empty ``mask`` farthest from its outline (inside it, also when it is not
    convex)."""
    box = bounding_box(mask)
    depth = ndimage.distance_transform_edt(np.pad(mask[box], 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(r + box[0].start), int(c + box[1].start)


def cut_at_negatives(mask: np.ndarray, prob: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Remove the part of ``mask`` that a negative prompt falls in.

    The mask is flooded from its positive and its negative prompt pixels (seeded watershed on
    ``1 - prob``): pixels reached first from a negative seed leave the mask, so a leak into a
    neighbour goes where the mask's confidence dips between the two seeds.

    Args:
        mask: ``[H, W]`` bool predicted mask.
        prob: ``[H, W]`` float mask probability.
        positive, negative: ``[h, w]`` bool prompt regions on the same image at any resolution
            (e.g. the model's), read at the centres of ``mask``'s pixels.

    Returns:
        ``[H, W]`` bool, a subset of ``mask``; ``mask`` itself when no negative prompt falls inside
        it or no positive one does.
    """
    neg = resample_nearest(negative, mask.shape) & mask
    if not neg.any():
        return mask
    pos = resample_nearest(positive, mask.shape) & mask & ~neg
    if not pos.any():
        return mask
    box = bounding_box(mask)  # flood only the mask's bounding box
    markers = np.zeros(mask[box].shape, np.int32)
    markers[pos[box]] = 1
    markers[neg[box]] = 2
    out = np.zeros_like(mask)
    out[box] = watershed(1.0 - prob[box], markers, mask=mask[box]) == 1
    return out


def grow_at_marks(mask: np.ndarray, prob: np.ndarray, marks: np.ndarray, negative: np.ndarray | None = None,
                  margin: float = 2.0, min_radius: float = 3.0) -> np.ndarray:
    """Add to ``mask`` the pixels of its positive marks (clicks, strokes) that lie outside it.

    Each connected piece of the marks outside the mask joins it, together with the pixels whose
    probability is at least the piece's own (at most 0.5, the mask's threshold), connected to it,
    within ``d + margin`` pixels of its centre (``d``: its distance to the mask; at least
    ``min_radius``). Pixels of a ``negative`` prompt never join. Everything is computed in a
    window around each piece, so the cost does not grow with the image.

    Args:
        mask: ``[H, W]`` bool mask.
        prob: ``[H, W]`` float mask probability.
        marks: ``[h, w]`` bool positive clicks and strokes at any resolution (e.g. the model's),
            read at the centres of ``mask``'s pixels.
        negative: ``[h, w]`` bool negative prompt region, or None.

    Returns:
        ``[H, W]`` bool, a superset of ``mask``; ``mask`` itself when every mark lies inside it.
    """
    blocked = resample_nearest(negative, mask.shape) if negative is not None else np.zeros_like(mask)
    seeds = resample_nearest(marks, mask.shape) & ~mask & ~blocked
    if not seeds.any():
        return mask
    out = mask.copy()
    pieces, _ = ndimage.label(seeds, structure=_EIGHT_CONNECTED)
    for k, box in enumerate(ndimage.find_objects(pieces), start=1):
        radius = max(min_radius, _distance_to_mask(mask, pieces, k, box) + margin)
        r0, c0 = (box[0].start + box[0].stop - 1) / 2, (box[1].start + box[1].stop - 1) / 2
        win = _expanded(box, radius + 1, mask.shape)
        rows, cols = np.ogrid[win[0], win[1]]
        seed = pieces[win] == k
        level = min(0.5, float(prob[win][seed].max()))
        near = (rows - r0) ** 2 + (cols - c0) ** 2 <= radius * radius
        candidates = (((prob[win] >= level) & near) | seed) & ~blocked[win]
        regions, _ = ndimage.label(candidates, structure=_EIGHT_CONNECTED)
        touched = np.unique(regions[seed])
        out[win] |= np.isin(regions, touched[touched > 0])
    return out


def cut_beyond_negative_clicks(mask: np.ndarray, anchor: np.ndarray, negatives: np.ndarray,
                               keep: np.ndarray | None = None) -> np.ndarray:
    """A convex object's mask cut along the line through each negative click, square to the
    direction from ``anchor``: the pixels at least as far along that direction as the click
    leave the mask.

    Args:
        mask: ``[H, W]`` bool mask.
        anchor: ``(row, col)`` a point of the object (its first positive click).
        negatives: ``[K, 2]`` (row, col) negative clicks.
        keep: ``[K', 2]`` (row, col) positive clicks: a negative click whose line would cut one
            of them off cuts nothing.

    Returns:
        ``[H, W]`` bool, a subset of ``mask`` (computed in the mask's bounding box).
    """
    if not mask.any() or not len(negatives):
        return mask
    out = mask.copy()
    box = bounding_box(mask)
    rows = np.arange(box[0].start, box[0].stop, dtype=np.float64)[:, None] - anchor[0]
    cols = np.arange(box[1].start, box[1].stop, dtype=np.float64)[None, :] - anchor[1]
    keep = np.zeros((0, 2)) if keep is None else np.asarray(keep, dtype=np.float64).reshape(-1, 2)
    for point in np.asarray(negatives, dtype=np.float64).reshape(-1, 2):
        direction = point - anchor
        distance = float(np.hypot(*direction))
        if distance < 1.0:
            continue
        unit = direction / distance
        limit = distance - 0.5
        if len(keep) and (((keep - anchor) @ unit) >= limit).any():
            continue
        out[box] &= rows * unit[0] + cols * unit[1] < limit
    return out


def grow_toward_positive_clicks(mask: np.ndarray, previous: np.ndarray, anchor: np.ndarray,
                                positives: np.ndarray, half_angle: float = 90.0) -> np.ndarray:
    """A mask grown on the side of each positive click that lies outside its ``previous`` mask:
    the pixels whose direction from ``anchor`` lies within ``half_angle`` degrees of the click's
    (90: the click's whole side, for a convex object; less: a sector, for an object star-shaped
    around ``anchor``), not beyond the line through the click square to its direction, and at
    most as far from ``previous`` as the click (plus half a pixel) join it.

    Args:
        mask: ``[H, W]`` bool mask of this round.
        previous: ``[H, W]`` bool mask of the round before (without one: ``mask`` before growth).
        anchor: ``(row, col)`` a point of the object (its first positive click).
        positives: ``[K, 2]`` (row, col) positive clicks.
        half_angle: degrees, at most 90.

    Returns:
        ``[H, W]`` bool, a superset of ``mask``.
    """
    if not previous.any() or not len(positives):
        return mask
    out = mask
    height, width = mask.shape
    box = bounding_box(previous)
    for point in np.asarray(positives, dtype=np.float64).reshape(-1, 2):
        r, c = int(round(point[0])), int(round(point[1]))
        if not (0 <= r < height and 0 <= c < width) or previous[r, c]:
            continue
        direction = point - anchor
        distance = float(np.hypot(*direction))
        if distance < 1.0:
            continue
        unit = direction / distance
        margin = 8
        while True:  # a window around the previous mask and the click, wide enough for the growth
            window = (slice(max(0, min(box[0].start, r) - margin), min(height, max(box[0].stop, r + 1) + margin)),
                      slice(max(0, min(box[1].start, c) - margin), min(width, max(box[1].stop, c + 1) + margin)))
            outside = ndimage.distance_transform_edt(~previous[window])
            gap = float(outside[r - window[0].start, c - window[1].start])
            if gap + 1 <= margin:
                break
            margin = int(np.ceil(gap)) + 2
        rows = np.arange(window[0].start, window[0].stop, dtype=np.float64)[:, None] - anchor[0]
        cols = np.arange(window[1].start, window[1].stop, dtype=np.float64)[None, :] - anchor[1]
        along = rows * unit[0] + cols * unit[1]
        if half_angle >= 90.0:
            side = along >= 0
        else:
            side = along >= np.cos(np.deg2rad(half_angle)) * np.hypot(rows, cols)
        grown = (outside <= gap + 0.5) & side & (along <= distance + 0.5)
        if grown.any():
            if out is mask:
                out = mask.copy()
            out[window] |= grown
    return out


def cut_at_foreign_nuclei(mask: np.ndarray, prob: np.ndarray, positive: np.ndarray, nuclei: np.ndarray,
                          min_inside: float = 0.5, nucleus_areas: np.ndarray | None = None) -> np.ndarray:
    """Cut a cell's mask between its own nucleus and the other nuclei it covers.

    Own nuclei: those a positive prompt pixel falls on, else the one nearest to the prompt. Other
    nuclei with at least ``min_inside`` of their area inside the mask are negative seeds, the own
    nuclei and the prompt positive seeds of :func:`cut_at_negatives`; the region connected to the
    prompt is kept.

    Args:
        mask: ``[H, W]`` bool mask of an object named as a cell.
        prob: ``[H, W]`` float mask probability.
        positive: ``[h, w]`` bool positive prompt region at any resolution (e.g. the model's).
        nuclei: ``[H, W]`` int label image of the nuclei on the image (0: none).
        nucleus_areas: ``np.bincount(nuclei.ravel())``, when the caller keeps it for the image
            (then a click costs the mask's bounding box, not the whole image).

    Returns:
        ``[H, W]`` bool, a subset of ``mask``; ``mask`` itself when it covers no other nucleus.
    """
    if not mask.any():
        return mask
    box = bounding_box(mask)
    covered = nuclei[box][mask[box]]
    ids, counts = np.unique(covered[covered > 0], return_counts=True)
    if len(ids) < 2:
        return mask
    if nucleus_areas is None:
        nucleus_areas = np.bincount(nuclei.ravel())
    mostly = ids[counts >= min_inside * nucleus_areas[ids]]
    prompt = resample_nearest(positive, mask.shape) & mask
    if len(mostly) < 2 or not prompt.any():
        return mask
    own = np.intersect1d(np.unique(nuclei[prompt]), mostly)
    if not len(own):  # the prompt is beside every nucleus: its own is the nearest one
        rows, cols = np.nonzero(prompt)
        sub = nuclei[box]
        distance = []
        for i in mostly:
            r, c = np.nonzero(sub == i)
            distance.append(np.min((r + box[0].start - rows.mean()) ** 2 + (c + box[1].start - cols.mean()) ** 2))
        own = mostly[[int(np.argmin(distance))]]
    foreign = np.setdiff1d(mostly, own)
    if not len(foreign):
        return mask
    seeds = prompt.copy()  # the nuclei lie inside the mask's box: only the box is looked at
    seeds[box] |= np.isin(nuclei[box], own) & mask[box]
    others = np.zeros_like(mask)
    others[box] = np.isin(nuclei[box], foreign) & mask[box] & ~seeds[box]
    return keep_prompted_regions(cut_at_negatives(mask, prob, seeds, others), prompt)


def split_between_nuclei(mask: np.ndarray, prob: np.ndarray, nuclei: np.ndarray, nucleus_areas: np.ndarray,
                         min_inside: float = 0.5) -> np.ndarray:
    """One region per nucleus of a mask that covers several: a found "cell" holding two or more
    nuclei is that many touching cells.

    The nuclei with at least ``min_inside`` of their area inside the mask seed a watershed on
    ``1 - prob`` within the mask (as :func:`cut_at_negatives`, with one seed per nucleus), so the
    cells part where the mask's confidence dips between their nuclei.

    Args:
        mask: ``[H, W]`` bool mask of an object named as a cell.
        prob: ``[H, W]`` float mask probability (read in the mask's bounding box only).
        nuclei: ``[H, W]`` int label image of the nuclei on the image (0: none).
        nucleus_areas: ``np.bincount(nuclei.ravel())``.

    Returns:
        ``[H, W]`` int32, ``i + 1`` on the region of the ``i``-th nucleus (in label order), 0
        off the mask; the mask itself as region 1 when it covers fewer than two nuclei.
    """
    out = np.zeros(mask.shape, np.int32)
    if not mask.any():
        return out
    box = bounding_box(mask)
    inside = mask[box]
    covered = nuclei[box][inside]
    ids, counts = np.unique(covered[covered > 0], return_counts=True)
    seeds = ids[counts >= min_inside * nucleus_areas[ids]]
    if len(seeds) < 2:
        out[mask] = 1
        return out
    markers = np.zeros(inside.shape, np.int32)
    for i, k in enumerate(seeds, start=1):
        markers[(nuclei[box] == k) & inside] = i
    out[box] = watershed(1.0 - prob[box], markers, mask=inside, connectivity=2)  # 8-connected, as the regions
    return out


def _expanded(box: tuple[slice, slice], by: float, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """``box`` grown by ``by`` pixels on every side, clipped to ``shape``."""
    pad = int(np.ceil(by))
    return (slice(max(0, box[0].start - pad), min(shape[0], box[0].stop + pad)),
            slice(max(0, box[1].start - pad), min(shape[1], box[1].stop + pad)))


def _distance_to_mask(mask: np.ndarray, pieces: np.ndarray, k: int, box: tuple[slice, slice]) -> float:
    """Smallest distance from piece ``k`` of ``pieces`` to a pixel of ``mask`` (0 for an empty
    mask), searched in windows around the piece that double until they hold the answer: a mask
    pixel outside a window grown by ``r`` is farther than ``r`` from every pixel of the piece."""
    if not mask.any():
        return 0.0
    reach = 8.0
    while True:
        win = _expanded(box, reach, mask.shape)
        whole = win[0].stop - win[0].start == mask.shape[0] and win[1].stop - win[1].start == mask.shape[1]
        inside = mask[win]
        if inside.any():
            nearest = float(ndimage.distance_transform_edt(~inside)[pieces[win] == k].min())
            if nearest <= reach or whole:
                return nearest
        reach *= 2


def split_touching_cells(mask: np.ndarray, clicks: np.ndarray, prompt: np.ndarray, min_area: float = 150.0,
                         min_depth: float = 1.5, max_neck: float = 0.7) -> np.ndarray:
    """The part of a cell's mask that is the prompted cell, where the mask has spread over a
    touching neighbour: two cells side by side make a mask with a neck between two blobs.

    The mask's distance transform (its holes filled, and the image's edge not taken for an
    outline) has one peak per blob (maxima at least ``min_depth`` px above their surroundings,
    ``h_maxima``; each positive click marks its own blob too); a watershed of the negated
    distance from them divides the mask into blobs, and two touching blobs stay one where the
    mask is wide between them: where the deepest pixel of their common border is at least
    ``max_neck`` times the smaller blob's own depth, or either blob is under ``min_area``
    pixels. The blobs kept are those holding a positive click, else (a mask prompt, as in
    propagation) those lying mostly inside the prompt, else the one that overlaps it most (the
    mask stays whole where neither a click nor the prompt falls on it); only
    blobs that touch a kept one leave the mask (a separate piece, kept by the rules before,
    stays).

    Args:
        mask: ``[H, W]`` bool mask of an object named as a cell.
        clicks: ``[K, 2]`` (row, col) positive clicks on the mask's image (may be empty).
        prompt: ``[h, w]`` bool positive prompt region at any resolution (e.g. the model's).
        min_area: smallest blob (pixels of ``mask``) that can be another cell.

    Returns:
        ``[H, W]`` bool, a subset of ``mask``; ``mask`` itself when it has no neck.
    """
    if not mask.any():
        return mask
    box = _expanded(bounding_box(mask), 1, mask.shape)
    inside = mask[box]
    # the image's edge is not the cell's outline: a cell cut by it goes on beyond it, as its
    # mirror image (the box keeps a background margin on its other sides), and a notch of the mask
    # that opens onto the image's edge is a hole; a hole in a cell's mask is no outline either
    pad = max(inside.shape)
    widths = [(pad * (b.start == 0), pad * (b.stop == extent)) for b, extent in zip(box, mask.shape)]
    window = tuple(slice(w[0], w[0] + size) for w, size in zip(widths, inside.shape))
    mirrored = ndimage.binary_fill_holes(np.pad(inside, widths, mode="symmetric"))
    depth = ndimage.distance_transform_edt(np.pad(mirrored, 1))[1:-1, 1:-1][window]
    filled = mirrored[window]
    peaks, n = ndimage.label(h_maxima(depth, min_depth), structure=_EIGHT_CONNECTED)
    clicks = np.asarray(clicks, dtype=float).reshape(-1, 2)
    rows, cols = inside.shape
    for r, c in np.round(clicks).astype(int) - (box[0].start, box[1].start):
        if 0 <= r < rows and 0 <= c < cols and filled[r, c] and not peaks[r, c]:
            n += 1  # a click marks its cell's own blob, also where that blob has no peak of its own
            peaks[r, c] = n
    if n < 2:
        return mask
    blobs = watershed(-depth, peaks, mask=filled, connectivity=2)
    index = np.arange(1, n + 1)
    own_depth = np.concatenate([[0.0], ndimage.maximum(depth, blobs, index)])
    area = np.concatenate([[0.0], ndimage.sum(filled, blobs, index)])
    neck = np.zeros((n + 1, n + 1))  # deepest pixel of the border between two blobs (0: none)
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = blobs[:rows - dr, max(0, -dc):cols - max(0, dc)]
        b = blobs[dr:, max(0, dc):cols + min(0, dc) or None]
        da = depth[:rows - dr, max(0, -dc):cols - max(0, dc)]
        db = depth[dr:, max(0, dc):cols + min(0, dc) or None]
        border = (a > 0) & (b > 0) & (a != b)
        np.maximum.at(neck, (a[border], b[border]), np.minimum(da[border], db[border]))
    neck = np.maximum(neck, neck.T)
    wide = neck >= max_neck * np.minimum.outer(own_depth, own_depth)
    small = np.minimum.outer(area, area) < min_area
    _, component = connected_components(csr_matrix((neck > 0) & (wide | small)), directed=False)
    groups = np.where(blobs > 0, component[blobs] + 1, 0)
    kept: set[int] = set()
    for r, c in np.round(clicks).astype(int):
        r, c = r - box[0].start, c - box[1].start
        if 0 <= r < rows and 0 <= c < cols and groups[r, c]:
            kept.add(int(groups[r, c]))
    if not kept:
        marked = resample_nearest(prompt, mask.shape)[box] & inside
        ids = np.unique(groups[inside])
        ids = ids[ids > 0]  # 0: a piece too thin for a peak, left alone below
        if not len(ids):
            return mask
        overlap = np.array([(marked & (groups == g)).sum() for g in ids])
        if not overlap.any():  # nothing says which blob is the prompted cell
            return mask
        size = np.array([(groups == g).sum() for g in ids])
        kept = {int(g) for g, o, s in zip(ids, overlap, size) if o > 0.5 * s} or {int(ids[int(np.argmax(overlap))])}
    pieces, _ = ndimage.label(inside, structure=_EIGHT_CONNECTED)  # other pieces stay as they are
    touched = np.unique(pieces[np.isin(groups, list(kept))])
    dropped = ~np.isin(groups, list(kept)) & np.isin(pieces, touched) & inside
    if not dropped.any():
        return mask
    out = mask.copy()
    out[box] &= ~dropped
    return out
