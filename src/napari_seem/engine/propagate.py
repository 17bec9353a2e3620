"""Carry segmented objects through z-slices or time frames with SEEM's memory prompt.

Frame by frame, each object's mask on the last frame is both the visual prompt (its pixels)
and the memory prompt (its mask logits) on the next frame, so an object is followed as it moves
and deforms. An object stops — instead of hallucinating on frames where it is gone — when its
new mask is empty, overlaps its previous mask by less than ``stop_iou`` (IoU), or its mask
confidence falls below ``min_score``. Objects keep their ids throughout.

Motion limit (with the segmenter's region rules, ``connected_objects``): an object moves a
little between frames, so the parts of its new mask farther than ``max_step`` from its previous
mask are a leak into a neighbour, not the object; they are cut off like a negative click (seeded
watershed on the mask's confidence, from the previous mask's core and the far parts). By default
``max_step`` is 30 % of the object's radius (at least 2 px); ``max_step=None`` switches it off.

Hysteresis, for time-lapses (``hold_probability``, with the region rules): an object's memory
fades a little on each frame, and its mask would shrink frame by frame. So where the new mask is
smaller than the previous one, the previous mask's pixels whose probability on the new frame is
still above ``hold_probability`` (:data:`HOLD_PROBABILITY` = 0.1 for a time axis) stay in the
object (:func:`hold_shrinking`). Off by default: through a z-stack, sections do shrink quickly
toward an object's top and bottom, and holding them there makes masks too large (the napari
widget turns it on for an axis labelled ``t`` or ``time``).

Nuclei keep their size (with the segmenter's ``shape_priors`` too): frame by frame, the memory of
a nucleus can creep into the cytoplasm around it until its mask covers much of its cell. So each
frame, every object that started as a ``nucleus`` is decoded again from one click at its mask's
deepest pixel (no memory); where that click's mask is again a nucleus, lies inside the propagated
mask (at least :data:`LEAK_COVER` of it), is not much smaller than the seed (:data:`LEAK_SEED_SHARE`),
and the propagated mask is more than :data:`LEAK_RATIO` times its size, the propagated
mask has leaked and the click's mask (and memory) replaces it (:func:`reanchor_nuclei`).

Cells stay cells (with the segmenter's ``cells_hold_one_nucleus``): the decoder, prompted with a
cell's previous mask, sometimes returns only the nucleus inside it (named ``nucleus``), and the
track would follow the nucleus from then on. So an object named ``cell`` on the previous frame
that comes out named otherwise is decoded again from its previous mask's cytoplasm (its pixels
off the nuclei text search finds on the new frame), as a mask and as a click at its deepest
pixel; of those named ``cell``, the mask that overlaps the previous one most is taken when it
overlaps it more than the first one does (:func:`keep_cells`).

Nuclei keep their outline (with the segmenter's outline refiner, when it refines nuclei,
:mod:`~napari_seem.engine.outline_refiner`): frame by frame, the memory also lags behind a
nucleus that moves, and the more so the less it stands out from its cytoplasm, until the mask
slides off it. So each frame, every object that started as a ``nucleus`` is drawn again at full
resolution by the refiner, from a click at its mask's deepest pixel, as a clicked nucleus is,
unless the new outline is smaller than :data:`LEAK_SEED_SHARE` of the seed
(:func:`redraw_outlines`). It is a nucleus whatever SEEM names its mask on this frame: a nucleus
whose mask grows into its cell comes out named ``cell``, and redrawn it stays the nucleus. A
nucleus that leaves the image shrinks as it goes, by up to a third of its area per frame, so for
an outline within :data:`EDGE_MARGIN` pixels of the image's edge the bound is :data:`EDGE_SHARE`
of the last outline the refiner drew for the object (or of the seed), where that is lower. The
refiner keeps a mask whose outline it would change too much (``MIN_AGREEMENT``), but here the
object is known to be a nucleus: a redrawn outline that lies at least :data:`INSIDE_SHARE` inside
the propagated mask is a leak cut back, and is taken however much smaller it is.

Cells keep their outline too (with an outline refiner that draws cells): each frame, every object
that started as a ``cell`` is drawn again by that refiner from a click at its mask's deepest
pixel, where the new outline agrees with the propagated mask (``MIN_AGREEMENT``): a mask that
creeps over a neighbour cell, frame by frame, is cut back to the cell (:func:`redraw_cells`).

``propagate`` is a generator: the caller shows progress per frame and cancels by no longer
iterating (the frames done so far stay done). To correct frame ``k`` and re-propagate, call it
again with ``start=k`` and the corrected result: only frames after ``k`` (in the chosen
direction) are visited.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from scipy import ndimage

from .connected import CELL, NUCLEUS, bounding_box, cut_at_negatives, deepest_pixel
from .outline_refiner import refine_outlines
from .prompts import ObjectPrompt
from .result import Segmentation

if TYPE_CHECKING:
    from .segmenter import Segmenter

DIRECTIONS = ("forward", "backward", "both")
#: axis labels that name a time axis (napari ``dims.axis_labels``, lower case)
TIME_AXIS_LABELS = ("t", "time", "frame", "frames")
#: ``max_step="auto"``: an object's outline moves at most this share of its radius per frame
AUTO_STEP_FRACTION = 0.3
#: time-lapses: where a propagated mask shrinks, the previous mask's pixels more likely than this
#: stay (:func:`hold_shrinking`)
HOLD_PROBABILITY = 0.1
#: a propagated nucleus more than this many times the size of the mask one click at its centre
#: gives has leaked into its surroundings (:func:`reanchor_nuclei`)
LEAK_RATIO = 1.3
#: ... when that click's mask lies inside it at least this much
LEAK_COVER = 0.9
#: ... and is at least this share of the seed's area (not a fragment of the nucleus)
LEAK_SEED_SHARE = 0.75
#: a cell that turned into another class is decoded again from its cytoplasm when that is at least
#: this share of its previous mask (:func:`keep_cells`)
CYTOPLASM_SHARE = 0.2
#: an outline with a pixel this close to the image's edge (in pixels) may be a nucleus leaving the
#: image (:func:`redraw_outlines`); SEEM's masks, decoded at 1/4 resolution, can stop a few pixels
#: short of the edge
EDGE_MARGIN = 4
#: ... and there a redrawn outline is taken when it is at least this share of the last one drawn
#: for the object (a nucleus leaving the image loses up to a third of its area per frame)
EDGE_SHARE = 0.5
#: a redrawn outline at least this share inside the propagated mask is taken however much smaller
#: it is (a leak cut back; the refiner's own rule asks for an IoU of ``MIN_AGREEMENT``)
INSIDE_SHARE = 0.9


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def frame_order(n_frames: int, start: int, direction: str, frame_range: tuple[int, int] | None = None) -> list[list[int]]:
    """The runs of frame indices visited after ``start``: one run per direction, nearest first."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not 0 <= start < n_frames:
        raise ValueError(f"start frame {start} is outside the stack of {n_frames} frames")
    first, last = (0, n_frames - 1) if frame_range is None else frame_range
    if not (0 <= first <= start <= last < n_frames):
        raise ValueError(f"frame_range {frame_range} must contain the start frame {start} and lie within 0..{n_frames - 1}")
    runs = []
    if direction in ("forward", "both"):
        runs.append(list(range(start + 1, last + 1)))
    if direction in ("backward", "both"):
        runs.append(list(range(start - 1, first - 1, -1)))
    return runs


def propagate(
    segmenter: "Segmenter",
    frames,
    start: int,
    seeds: Segmentation,
    *,
    direction: str = "forward",
    frame_range: tuple[int, int] | None = None,
    stop_iou: float = 0.1,
    min_score: float = 0.3,
    max_step: float | str | None = "auto",
    hold_probability: float | None = None,
    normalize="auto",
    channel: int | None = None,
) -> Iterator[tuple[int, Segmentation]]:
    """Yield ``(frame_index, Segmentation)`` for the start frame (the seeds) and every visited frame.

    Args:
        segmenter: the :class:`~napari_seem.engine.Segmenter` (its current image changes).
        frames: ``[T, H, W]`` or ``[T, H, W, C]`` array-like (numpy, dask, zarr: frames are read one
            at a time); the propagation axis comes first.
        start: index of the frame the seeds belong to.
        seeds: the objects on the start frame (masks ``[N, H, W]``), e.g. a ``predict`` result or
            masks painted by the user (``Segmentation`` without memory).
        direction: ``"forward"`` (increasing index), ``"backward"`` or ``"both"`` (forward first).
        frame_range: ``(first, last)`` inclusive limits of the frames to visit.
        stop_iou, min_score: the stop rule (see the module docstring).
        max_step: motion limit in pixels per frame (see the module docstring); ``"auto"``: 30 %
            of each object's radius, at least 2 px; None: off. Applies only with the segmenter's
            region rules (``connected_objects``).
        hold_probability: where an object's new mask is smaller than its previous one, the
            previous pixels still more likely than this stay in it (see the module docstring;
            :data:`HOLD_PROBABILITY` for time-lapses); None (default): off, as for z-stacks. Only
            with the region rules.
        normalize, channel: image handling for every frame (as in ``set_image``).
    """
    if max_step is not None and max_step != "auto" and not (isinstance(max_step, (int, float)) and max_step >= 0):
        raise ValueError(f"max_step must be 'auto', None or a distance in pixels >= 0, got {max_step!r}")
    if hold_probability is not None and not (isinstance(hold_probability, (int, float)) and 0 < hold_probability < 1):
        raise ValueError(f"hold_probability must be None or a probability between 0 and 1, got {hold_probability!r}")
    n_frames = len(frames)
    runs = frame_order(n_frames, start, direction, frame_range)
    frame_shape = tuple(np.shape(frames[start]))[:2]
    if len(seeds) == 0:
        raise ValueError("nothing to propagate: the seed result has no objects")
    if tuple(seeds.shape) != frame_shape:
        raise ValueError(f"seed masks have shape {seeds.shape}, frames are {frame_shape}")
    yield start, seeds
    # each object's class and area where it started: what re-anchoring a nucleus compares with
    seed_ids = seeds.object_ids
    started = {int(i): (name, float(area)) for i, name, area in zip(seed_ids, seeds.class_names, seeds.areas())}
    reanchor = segmenter.connected_objects and segmenter.shape_priors
    for run in runs:
        active = seeds
        drawn: dict[int, float] = {}  # object id -> area of the last outline the refiner drew for it
        for index in run:
            segmenter.set_image(np.asarray(frames[index]), normalize=normalize, channel=channel)
            nxt = _step(segmenter, active)
            if segmenter.connected_objects and segmenter._cells_hold_nuclei():
                keep_cells(segmenter, nxt, active)
            probability = _probabilities(segmenter, nxt)
            if max_step is not None and segmenter.connected_objects:
                limit_motion(nxt, active, probability, max_step)
            if hold_probability is not None and segmenter.connected_objects:
                hold_shrinking(nxt, active, probability, hold_probability)
            if reanchor:
                reanchor_nuclei(segmenter, nxt, started)
            if segmenter.refiners and segmenter.connected_objects:
                redraw_outlines(segmenter, nxt, started, drawn)
                redraw_cells(segmenter, nxt, started)
            keep = [
                k for k in range(len(nxt))
                if nxt.masks[k].any()
                and nxt.scores[k] >= min_score
                and mask_iou(nxt.masks[k], active.masks[k]) >= stop_iou
            ]
            active = nxt.select(keep)
            yield index, active
            if len(active) == 0:
                break


def _step(segmenter: "Segmenter", active: Segmentation) -> Segmentation:
    prompts = [ObjectPrompt(mask=m) for m in active.masks]
    result = segmenter.predict(prompts, previous=active if _memory_fits(segmenter, active) else None)
    result.object_ids = active.object_ids.copy()
    return result


def _memory_fits(segmenter: "Segmenter", previous: Segmentation) -> bool:
    """Whether ``previous``'s memory (mask logits) fits the segmenter's current image."""
    return previous.memory is not None and segmenter._state().features.padded_size == tuple(
        4 * s for s in previous.memory.shape[-2:]
    )


def keep_cells(segmenter: "Segmenter", result: Segmentation, previous: Segmentation) -> list[int]:
    """Decode again, in place, the objects of ``result`` (on the segmenter's current image) that
    were named ``cell`` in ``previous`` and are named otherwise now, from their previous mask's
    cytoplasm (see the module docstring). Returns the positions of the replaced objects."""
    switched = [k for k in range(len(result))
                if previous.class_names[k] == CELL and result.class_names[k] != CELL and previous.masks[k].any()]
    if not switched:
        return []
    nuclei, _ = segmenter._nucleus_labels(segmenter._state())
    cytoplasm = {k: previous.masks[k] & (nuclei == 0) for k in switched}
    switched = [k for k in switched if cytoplasm[k].sum() >= CYTOPLASM_SHARE * previous.masks[k].sum()]
    if not switched:
        return []
    # two prompts per object, decoded apart (SEEM's queries attend to each other): the cytoplasm as
    # a mask, and a click at its deepest pixel
    before = previous.select(switched)
    memory_before = before if _memory_fits(segmenter, before) else None
    as_mask = segmenter.predict([ObjectPrompt(mask=cytoplasm[k]) for k in switched], previous=memory_before)
    as_click = segmenter.predict([ObjectPrompt(points=[deepest_pixel(cytoplasm[k])]) for k in switched],
                                 previous=memory_before)
    replaced = []
    for j, k in enumerate(switched):
        old = previous.masks[k]
        overlap = {i: mask_iou(again.masks[j], old) for i, again in enumerate((as_mask, as_click))
                   if again.class_names[j] == CELL}
        if not overlap or max(overlap.values()) <= mask_iou(result.masks[k], old):
            continue
        _replace(result, k, (as_mask, as_click)[max(overlap, key=overlap.get)], j)
        replaced.append(k)
    return replaced


def _replace(result: Segmentation, k: int, source: Segmentation, j: int) -> None:
    """Object ``k`` of ``result`` becomes, in place, object ``j`` of ``source`` (mask, score, class
    and memory; its id stays)."""
    result.masks[k] = source.masks[j]
    result.scores[k] = source.scores[j]
    result.class_names[k] = source.class_names[j]
    result.class_scores[k] = source.class_scores[j]
    memory = result.memory
    if memory is not None and source.memory is not None:
        memory[k] = source.memory[j]


def _probabilities(segmenter: "Segmenter", result: Segmentation) -> Callable[[int], np.ndarray]:
    """``k -> [H, W]`` mask probability of object ``k`` of ``result``, each computed once (the
    motion limit and the hold may both need it; neither changes the logits)."""
    done: dict[int, np.ndarray] = {}

    def probability(k: int) -> np.ndarray:
        if k not in done:
            done[k] = segmenter.mask_probabilities(result, k)
        return done[k]

    return probability


def hold_shrinking(result: Segmentation, previous: Segmentation, probability: Callable[[int], np.ndarray],
                   level: float = HOLD_PROBABILITY) -> list[int]:
    """Where an object's mask in ``result`` is smaller than in ``previous``, add back, in place,
    the previous mask's pixels whose probability (``probability(k)``: ``[H, W]``) is above
    ``level``. Returns the positions of the objects that got pixels back."""
    held = []
    for k, (new, old) in enumerate(zip(result.masks, previous.masks)):
        if not new.any() or new.sum() >= old.sum():
            continue
        box = bounding_box(old)
        back = old[box] & ~new[box]
        back &= probability(k)[box] > level
        if back.any():
            result.masks[k][box] |= back
            held.append(k)
    return held


def reanchor_nuclei(segmenter: "Segmenter", result: Segmentation,
                    started: dict[int, tuple[str, float]]) -> list[int]:
    """Replace, in place, the masks of ``result`` (on the segmenter's current image) that started
    as nuclei and have leaked beyond their nucleus by the mask of one click at their deepest
    pixel (see the module docstring); ``started``: object id -> (seed class name, seed area).
    Returns the positions of the replaced objects."""
    candidates = [k for k in range(len(result))
                  if result.masks[k].any() and started.get(int(result.object_ids[k]), ("", 0.0))[0] == NUCLEUS]
    if not candidates:
        return []
    clicks = segmenter.predict([ObjectPrompt(points=[deepest_pixel(result.masks[k])]) for k in candidates])
    replaced = []
    for j, k in enumerate(candidates):
        click = clicks.masks[j]
        area = float(click.sum())
        seed_area = started[int(result.object_ids[k])][1]
        if (clicks.class_names[j] != NUCLEUS or area == 0 or area < LEAK_SEED_SHARE * seed_area
                or result.masks[k].sum() <= LEAK_RATIO * area
                or np.logical_and(click, result.masks[k]).sum() < LEAK_COVER * area):
            continue
        _replace(result, k, clicks, j)
        replaced.append(k)
    return replaced


def redraw_outlines(segmenter: "Segmenter", result: Segmentation, started: dict[int, tuple[str, float]],
                    drawn: dict[int, float] | None = None) -> list[int]:
    """Draw again, in place, with the segmenter's outline refiner (when it refines nuclei), the
    masks of ``result`` (on the segmenter's current image) of objects that started as nuclei,
    whatever they are named now, from a click at each mask's deepest pixel (see the module
    docstring); a redrawn mask smaller than :data:`LEAK_SEED_SHARE` of the seed's area (a fragment of the
    nucleus) is not taken. ``started``: object id -> (seed class name, seed area). ``drawn``
    (updated in place): object id -> area of the last outline taken for it; near the image's edge
    (:data:`EDGE_MARGIN`) the bound is the lower of that and :data:`EDGE_SHARE` of that area (of
    the seed's where none was drawn). Returns the positions of the objects the refiner was run on
    (it keeps a mask it disagrees with, unless the new outline lies :data:`INSIDE_SHARE` inside
    it: ``refine_outlines``)."""
    indices, redrawn = _redrawn_from_deepest_pixels(segmenter, result, started, NUCLEUS, inside_share=INSIDE_SHARE)
    drawn = {} if drawn is None else drawn
    for j, k in enumerate(indices):  # a redrawn outline much smaller than the seed is a fragment of the nucleus
        oid = int(result.object_ids[k])
        bound = LEAK_SEED_SHARE * started[oid][1]
        if near_edge(redrawn[j], EDGE_MARGIN):  # ... unless the nucleus is leaving the image
            bound = min(bound, EDGE_SHARE * drawn.get(oid, started[oid][1]))
        area = float(redrawn[j].sum())
        if area >= bound:
            result.masks[k] = redrawn[j]
            drawn[oid] = area
    return indices


def redraw_cells(segmenter: "Segmenter", result: Segmentation, started: dict[int, tuple[str, float]]) -> list[int]:
    """Draw again, in place, with the segmenter's outline refiner of cells, the masks of
    ``result`` (on the segmenter's current image) of objects that started as cells, whatever
    they are named now, from a click at each mask's deepest pixel; the refiner keeps a mask its
    outline disagrees with (``MIN_AGREEMENT``). ``started``: object id -> (seed class name, seed
    area). Returns the positions of the objects the refiner was run on."""
    indices, redrawn = _redrawn_from_deepest_pixels(segmenter, result, started, CELL)
    for j, k in enumerate(indices):
        result.masks[k] = redrawn[j]
    return indices


def _redrawn_from_deepest_pixels(segmenter: "Segmenter", result: Segmentation, started: dict[int, tuple[str, float]],
                                 class_name: str, inside_share: float | None = None) -> tuple[list[int], np.ndarray]:
    """``(positions, [K, H, W] outlines)``: the non-empty masks of ``result`` of the objects that
    started as ``class_name``, drawn again by the segmenter's refiner of that class from a click
    at each mask's deepest pixel (``refine_outlines``; a mask it disagrees with is returned as it
    is); no positions when there is no such refiner or object."""
    refiner = segmenter.refiner_for(class_name)
    indices = [k for k in range(len(result))
               if result.masks[k].any() and started.get(int(result.object_ids[k]), ("", 0.0))[0] == class_name]
    if refiner is None or not indices:
        return [], np.zeros((0, *result.masks.shape[1:]), bool)
    # only these objects' arrays (not one image-sized probability per object of the result);
    # read after re-anchoring, which may have replaced a mask's logits
    probabilities = np.stack([segmenter.mask_probabilities(result, k) for k in indices])
    clicks = [(np.array([deepest_pixel(result.masks[k])], np.float64), np.zeros((0, 2))) for k in indices]
    redrawn = refine_outlines(refiner, segmenter.refiner_image(), result.masks[indices], probabilities, clicks,
                              range(len(indices)), inside_share=inside_share)
    return indices, redrawn


def near_edge(mask: np.ndarray, margin: int) -> bool:
    """Whether ``mask`` has a pixel within ``margin`` pixels of the image's edge."""
    m = margin + 1
    return bool(mask[:m].any() or mask[-m:].any() or mask[:, :m].any() or mask[:, -m:].any())


def limit_motion(result: Segmentation, previous: Segmentation, probability: Callable[[int], np.ndarray],
                 max_step: float | str = "auto") -> None:
    """Cut off, in place, the parts of ``result``'s masks farther than ``max_step`` pixels from
    the same object's mask in ``previous`` (``probability(k)``: ``[H, W]`` mask probability of
    object ``k``)."""
    for k, (new, old) in enumerate(zip(result.masks, previous.masks)):
        if not new.any() or not old.any():
            continue
        step = AUTO_STEP_FRACTION * np.sqrt(old.sum() / np.pi) if max_step == "auto" else float(max_step)
        step = max(2.0, step)
        box = bounding_box(new | old)
        far = new[box] & (ndimage.distance_transform_edt(~old[box]) > step)
        if not far.any():
            continue
        core = ndimage.binary_erosion(old[box], iterations=max(1, int(step) // 2)) & new[box]
        if not core.any():
            core = old[box] & new[box]
        cut = cut_at_negatives(new[box], probability(k)[box], core, far)
        result.masks[k][box] = cut
