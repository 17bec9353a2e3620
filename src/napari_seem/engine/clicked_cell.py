"""Which nucleus a click in a cell's cytoplasm belongs to.

A cell clicked in its cytoplasm, near a touching neighbour, can come out of SEEM as that
neighbour. Two cues tell which cell a click in cytoplasm belongs to, and they fail in different
places: the **nearest nucleus**, and the nucleus whose **intensity basin** holds the click (a
watershed of the smoothed image flooded from the nuclei over the foreground: a cell is brightest at
its nucleus and dims toward its edge, so the basins part where touching cells meet). Where both
name the same nucleus, and the mask leaves that nucleus out while it covers another, the mask is
the neighbour's: the engine decodes the object again from the click and a second click on the
named nucleus (:meth:`napari_seem.engine.Segmenter.predict`, with ``cells_hold_one_nucleus``).

Either cue alone misleads (a click at the far end of a long cell is nearer its neighbour's
nucleus; a dim cell's cytoplasm can drain into a bright neighbour's basin). Shipped model, one
click on every cell of held-out synthetic images 9030-9229 (1,619 cells): the nearest nucleus
alone re-decoded 9 cells, 3 of them from right to wrong; the basin alone 21, 14 of them worse;
both together 5, all better. On 9030-9429 (3,243 cells) both together re-decoded 9, mean IoU
0.23 -> 0.71, none worse (the model card's *A click's own nucleus*).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from .connected import bounding_box
from .prompts import ObjectPrompt

#: Gaussian blur (pixels) of the image before the basins are flooded
BASIN_SIGMA = 1.5
#: foreground: the blurred image this many robust standard deviations (MADs) above its median
FOREGROUND_MADS = 3.0
#: a nucleus counts as covered by a mask holding at least this share of its pixels
MIN_INSIDE = 0.5


def nucleus_basins(gray: np.ndarray, nuclei: np.ndarray, sigma: float = BASIN_SIGMA,
                   foreground_mads: float = FOREGROUND_MADS) -> np.ndarray:
    """``[H, W]`` int32: each pixel of the foreground labelled with the nucleus whose intensity
    basin holds it (0: background).

    Args:
        gray: ``[H, W]`` float image (any scale).
        nuclei: ``[H, W]`` int label image of the nuclei (0: none), the watershed's seeds.
        sigma: Gaussian blur in pixels.
        foreground_mads: foreground threshold above the blurred image's median, in robust
            standard deviations (1.4826 median absolute deviations).
    """
    if gray.shape != nuclei.shape:
        raise ValueError(f"image {gray.shape} and nuclei {nuclei.shape} differ in shape")
    smooth = ndi.gaussian_filter(np.asarray(gray, np.float32), sigma)
    median = float(np.median(smooth))
    spread = 1.4826 * float(np.median(np.abs(smooth - median)))
    foreground = (smooth > median + foreground_mads * spread) | (nuclei > 0)
    return watershed(-smooth, nuclei.astype(np.int32), mask=foreground).astype(np.int32)


def is_lone_click(prompt: ObjectPrompt) -> bool:
    """Whether the prompt is one positive click and nothing else."""
    return (len(prompt.points) == 1 and int(prompt.point_labels[0]) == 1 and not len(prompt.boxes)
            and not prompt.strokes and not prompt.polygons and prompt.mask is None
            and prompt.negative_mask is None)


def nearest_label(labels: np.ndarray, point, radius: float) -> int:
    """The label (> 0) of ``labels`` nearest to ``point`` (row, col) within ``radius`` pixels, or 0."""
    r, c = (int(round(float(v))) for v in point)
    reach = int(np.ceil(radius)) + 1
    r0, c0 = max(r - reach, 0), max(c - reach, 0)
    window = labels[r0:r + reach + 1, c0:c + reach + 1]
    rows, cols = np.nonzero(window)
    if not len(rows):
        return 0
    distance = (rows + r0 - r) ** 2 + (cols + c0 - c) ** 2
    k = int(np.argmin(distance))
    return int(window[rows[k], cols[k]]) if distance[k] <= radius ** 2 else 0


def missed_nucleus(mask: np.ndarray, point, nuclei: np.ndarray, nucleus_areas: np.ndarray,
                   basins: Callable[[], np.ndarray], min_inside: float = MIN_INSIDE) -> int:
    """The nucleus a click in a cell belongs to when the cell's mask leaves it out, else 0.

    Args:
        mask: ``[H, W]`` bool mask of the object clicked at ``point``, named as a cell.
        point: the click (row, col).
        nuclei: ``[H, W]`` int label image of the nuclei on the image (0: none).
        nucleus_areas: ``np.bincount(nuclei.ravel())``.
        basins: gives :func:`nucleus_basins` of the image (called only when the cheaper tests
            pass, so the caller can make it once per image, lazily).
        min_inside: share of a nucleus inside the mask for it to count as covered.

    Returns:
        the label of the nucleus that is both nearest to the click and the one whose basin holds
        it, when the mask covers less than ``min_inside`` of it and at least that of another
        nucleus; 0 otherwise.
    """
    if not mask.any():
        return 0
    box = bounding_box(mask)
    covered_ids, counts = np.unique(nuclei[box][mask[box]], return_counts=True)
    keep = (covered_ids > 0) & (counts >= min_inside * nucleus_areas[covered_ids])
    covered = covered_ids[keep]
    if not len(covered):
        return 0
    r, c = (min(max(int(round(float(v))), 0), n - 1) for v, n in zip(point, mask.shape))
    rows, cols = np.nonzero(np.isin(nuclei[box], covered))
    farthest_needed = float(np.sqrt(np.min((rows + box[0].start - r) ** 2 + (cols + box[1].start - c) ** 2)))
    nearest = nearest_label(nuclei, (r, c), farthest_needed)  # a covered nucleus lies that near
    if nearest == 0 or nearest in covered:
        return 0
    return nearest if int(basins()[r, c]) == nearest else 0
