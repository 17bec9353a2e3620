"""Quality of a model on held-out synthetic data, measured through the engine (what users run).

Protocol (all images 256 x 256 unless ``shape`` says otherwise, seeds below
:data:`~napari_seem.train.data.TRAIN_SEED_OFFSET`, so never seen in training):

* ``click``: one positive click at the centre of an object's visible part (``object_centre`` of
  ``instances``: for a nucleated cell a point of its cytoplasm); IoU with the whole object.
* ``noc85``: clicks until IoU >= 0.85 (max 20), each new click at the largest error region, on
  the first ``noc_per_class`` nuclei and the first ``noc_per_class`` cells of each image; the mean
  over both classes, and per class in ``noc85_by_class``. (Until 2026-12-06 the protocol took the
  first four objects of each image, which are all cells: NoC numbers from before then are cells
  only.)
* ``text``: ``predict(text="nucleus")``; Hungarian matching of the masks to the true nuclei;
  mean IoU over the true nuclei (a missed nucleus counts 0).
* ``box`` (diagnostic): a box 3 px looser than each object's extent (the objects of ``click``);
  IoU with the whole object.
* ``text_cell`` (diagnostic): the same for ``predict(text="cell")`` and the true cells.
* ``referring`` (diagnostic): the largest nucleus (cell) of image ``i`` as the example of
  ``find_similar`` on image ``i + 1``; mean IoU over that image's true nuclei (cells), matched as
  for ``text``.
* ``automatic``: ``segment_everything()``; objects matched to visible true instances at IoU >= 0.5;
  share of matched objects with the right class name.
* ``propagation``: per time-lapse (20 frames), a click on the largest nucleus and on the largest
  cell present in all frames, propagated forward (as along a time axis: with the engine's
  ``hold_probability``, as the napari widget does for an axis labelled ``t``); mean IoU over frames 1..19 (a lost object counts
  0); identity kept when the object keeps its id with IoU >= 0.5 on every frame.
* ``propagation_corrected`` (diagnostic, ``corrected_propagation=True``): the same, after the first
  frame was corrected as in ``noc85`` (clicks until IoU >= 0.85, max 20), which separates what
  propagation loses from what the single click on the first frame got wrong.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..engine import ObjectPrompt, Segmenter
from ..engine.propagate import HOLD_PROBABILITY
from ..synthetic import make_image, make_sequence, object_centre
from .clicks import next_click
from .data import VOCABULARY

EVAL_SEED = 5000


@dataclass
class QualityReport:
    """Measured quality (see the module docstring for the protocol)."""

    click_iou: dict[str, float] = field(default_factory=dict)
    box_iou: dict[str, float] = field(default_factory=dict)
    noc85: float = float("nan")
    noc85_by_class: dict[str, float] = field(default_factory=dict)
    text_nucleus_iou: float = float("nan")
    text_nucleus_recall50: float = float("nan")
    text_cell_iou: float = float("nan")
    referring_iou: dict[str, float] = field(default_factory=dict)
    automatic_class_accuracy: float = float("nan")
    automatic_matched: int = 0
    propagation_iou: float = float("nan")
    propagation_identity: float = float("nan")
    propagation_corrected_iou: float = float("nan")
    propagation_corrected_identity: float = float("nan")
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``[P, G]`` IoUs of bool mask stacks ``[P, H, W]`` and ``[G, H, W]``."""
    p = pred.reshape(len(pred), -1).astype(np.float32)
    g = gt.reshape(len(gt), -1).astype(np.float32)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _targets(s, min_area: int):
    maps = {"nucleus": s.nuclei, "cell": s.cells, "vesicle": s.vesicles}
    for o in s.objects:
        visible = s.instances == o["id"]
        if o["class"] in ("nucleus", "cell") and visible.sum() >= min_area:
            yield o, maps[o["class"]] == o["id"], visible


def make_segmenter(model, **kwargs) -> Segmenter:
    """The engine as the shipped model is meant to run: native resolution (unless ``short_side``
    says otherwise), its own vocabulary."""
    kwargs.setdefault("vocabulary", list(VOCABULARY))
    kwargs.setdefault("short_side", None)
    return Segmenter(model, device="cpu", text_cache_dir=None, **kwargs)


def evaluate(model, n_images: int = 6, n_sequences: int = 2, max_clicks: int = 20, noc_per_class: int = 2,
             min_area: int = 60, seed: int = EVAL_SEED, corrected_propagation: bool = False,
             shape: tuple[int, int] = (256, 256), **segmenter_options) -> QualityReport:
    """Measure every acceptance metric on held-out synthetic data (``segmenter_options`` go to
    the :class:`Segmenter`, e.g. ``connected_objects=False`` for SEEM's raw masks;
    ``corrected_propagation`` adds the ``propagation_corrected`` diagnostic; ``shape``: the
    images' and time-lapses' size, 256 x 256 for the acceptance targets)."""
    seg = make_segmenter(model, **segmenter_options)
    report = QualityReport()
    clicks: dict[str, list[float]] = {"nucleus": [], "cell": []}
    boxes: dict[str, list[float]] = {"nucleus": [], "cell": []}
    nocs: dict[str, list[int]] = {"nucleus": [], "cell": []}
    text_ious, recalls, correct, matched = [], [], 0, 0
    text_cell_ious: list[float] = []
    referring: dict[str, list[float]] = {"nucleus": [], "cell": []}
    for i in range(n_images):
        s = make_image(shape, seed=seed + i)
        seg.set_image(s.image)
        taken = {"nucleus": 0, "cell": 0}
        for obj, full, visible in _targets(s, min_area):
            point = object_centre(s.instances, obj["id"])
            result = seg.predict(ObjectPrompt(points=[point]))
            clicks[obj["class"]].append(iou(result.masks[0], full))
            rows, cols = np.nonzero(full)
            box = (rows.min() - 3, cols.min() - 3, rows.max() + 3, cols.max() + 3)
            boxes[obj["class"]].append(iou(seg.predict(ObjectPrompt(boxes=[box])).masks[0], full))
            if taken[obj["class"]] < noc_per_class:
                taken[obj["class"]] += 1
                nocs[obj["class"]].append(_noc(seg, full, point, result, max_clicks))
        nuclei = np.stack([s.nuclei == o["id"] for o in s.objects if o["class"] == "nucleus"])
        per_nucleus = matched_ious(seg.predict(text="nucleus"), nuclei)
        text_ious.extend(per_nucleus.tolist())
        text_cell_ious.extend(matched_ious(seg.predict(text="cell"), _truth(s, "cell")).tolist())
        recalls.extend((per_nucleus >= 0.5).tolist())
        auto = seg.segment_everything()
        ids = [o["id"] for o in s.objects]
        gt = np.stack([s.instances == k for k in ids])
        gt_names = [o["class"] for o in s.objects]
        if len(auto):
            m = iou_matrix(auto.masks, gt)
            rows, cols = linear_sum_assignment(-m)
            for r, c in zip(rows, cols):
                if m[r, c] >= 0.5:
                    matched += 1
                    correct += auto.class_names[r] == gt_names[c]
        following = make_image(shape, seed=seed + i + 1)
        for class_name in referring:
            examples = [o["id"] for o in s.objects if o["class"] == class_name]
            if not examples:
                continue
            example = max(examples, key=lambda k: int((s.instances == k).sum()))
            found = seg.find_similar(s.image, s.instances == example, following.image)
            referring[class_name].extend(matched_ious(found, _truth(following, class_name)).tolist())
    report.click_iou = {k: float(np.mean(v)) for k, v in clicks.items()}
    report.box_iou = {k: float(np.mean(v)) for k, v in boxes.items()}
    report.noc85 = _mean(nocs["nucleus"] + nocs["cell"])
    report.noc85_by_class = {k: float(np.mean(v)) for k, v in nocs.items() if v}
    report.text_nucleus_iou = float(np.mean(text_ious))
    report.text_nucleus_recall50 = float(np.mean(recalls))
    report.text_cell_iou = float(np.mean(text_cell_ious))
    report.referring_iou = {k: float(np.mean(v)) for k, v in referring.items()}
    report.automatic_matched = matched
    report.automatic_class_accuracy = correct / matched if matched else 0.0
    report.propagation_iou, report.propagation_identity = _propagation_mean(seg, seed, n_sequences, 0, shape)
    if corrected_propagation:
        report.propagation_corrected_iou, report.propagation_corrected_identity = _propagation_mean(
            seg, seed, n_sequences, max_clicks, shape)
    report.counts = {"click_nucleus": len(clicks["nucleus"]), "click_cell": len(clicks["cell"]),
                     "noc_nucleus": len(nocs["nucleus"]), "noc_cell": len(nocs["cell"]),
                     "text_nuclei": len(text_ious), "sequences": n_sequences}
    return report


def _mean(values) -> float:
    """The mean, NaN (without a warning) for no values."""
    return float(np.mean(values)) if len(values) else float("nan")


def _truth(s, class_name: str) -> np.ndarray:
    """``[N, H, W]`` whole masks of the objects of ``class_name`` on synthetic image ``s``."""
    maps = {"nucleus": s.nuclei, "cell": s.cells}
    masks = [maps[class_name] == o["id"] for o in s.objects if o["class"] == class_name]
    return np.stack(masks) if masks else np.zeros((0, *s.instances.shape), bool)


def matched_ious(found, truth: np.ndarray) -> np.ndarray:
    """``[N]`` IoU of each true mask ``truth [N, H, W]`` with the found object matched to it
    (Hungarian matching on IoU; 0 where none is)."""
    per_object = np.zeros(len(truth))
    if len(found) and len(truth):
        ious = iou_matrix(found.masks, truth)
        rows, cols = linear_sum_assignment(-ious)
        per_object[cols] = ious[rows, cols]
    return per_object


def _noc(seg: Segmenter, full: np.ndarray, point, result, max_clicks: int) -> int:
    return _correct(seg, full, point, result, max_clicks)[0]


def _correct(seg: Segmenter, full: np.ndarray, point, result, max_clicks: int):
    """Corrective clicks at the largest error region until IoU >= 0.85: ``(clicks, result)``
    (``max_clicks`` and the last result when it is never reached)."""
    points, labels = [point], [1]
    for n in range(1, max_clicks + 1):
        if iou(result.masks[0], full) >= 0.85:
            return n, result
        click = next_click(result.masks[0], full)
        if click is None or n == max_clicks:
            break
        points.append(click[0])
        labels.append(click[1])
        result = seg.predict(ObjectPrompt(points=points, point_labels=labels), previous=result)
    return max_clicks, result


def _propagation_mean(seg: Segmenter, seed: int, n_sequences: int, max_clicks: int,
                      shape: tuple[int, int] = (256, 256)) -> tuple[float, float]:
    """Mean IoU and share of identities kept over the propagated nuclei and cells."""
    prop_ious, identity = [], []
    for i in range(n_sequences):
        for class_name in ("nucleus", "cell"):
            ious, kept = _propagation(seg, seed + 1000 + i, class_name, max_clicks, shape)
            if ious:
                prop_ious.extend(ious)
                identity.append(kept)
    return _mean(prop_ious), _mean(identity)


def _propagation(seg: Segmenter, seed: int, class_name: str, max_clicks: int = 0,
                 shape: tuple[int, int] = (256, 256)) -> tuple[list[float], bool]:
    """Propagate a click on the largest object of ``class_name`` present in all 20 frames
    (first corrected with up to ``max_clicks`` clicks, see :func:`_correct`, when > 0).

    Returns the IoUs of frames 1..19 (0 where the object was lost) and whether its identity was
    kept (the same id with IoU >= 0.5 on every frame).
    """
    seq = make_sequence(20, shape, seed=seed, axis="t")
    maps = seq.nuclei if class_name == "nucleus" else seq.cells
    tracks = [t for t in seq.tracks if t["n_frames"] == 20 and t["class"] == class_name]
    if not tracks:
        return [], True
    obj_id = max(tracks, key=lambda t: (maps[0] == t["id"]).sum())["id"]
    seg.set_image(seq.image[0])
    point = object_centre(seq.instances[0], obj_id)
    first = seg.predict(ObjectPrompt(points=[point]))
    if max_clicks > 0:
        first = _correct(seg, maps[0] == obj_id, point, first, max_clicks)[1]
    first.object_ids = np.array([obj_id])
    ious = []
    for frame, result in seg.propagate(seq.image, 0, first, hold_probability=HOLD_PROBABILITY):  # a time axis
        if frame > 0:
            same = len(result) and result.object_ids[0] == obj_id
            ious.append(iou(result.masks[0], maps[frame] == obj_id) if same else 0.0)
    ious += [0.0] * (19 - len(ious))
    return ious, min(ious) >= 0.5


@dataclass
class ZStackReport:
    """Quality on synthetic z-stacks (not an acceptance target: a diagnostic, see :func:`evaluate_zstacks`)."""

    click_iou: dict[str, float] = field(default_factory=dict)
    propagation_iou: dict[str, float] = field(default_factory=dict)
    identity_kept: dict[str, tuple[int, int]] = field(default_factory=dict)


def evaluate_zstacks(model, n_stacks: int = 10, seed: int = EVAL_SEED + 6000, n_slices: int = 20, min_area: int = 60,
                     **segmenter_options) -> ZStackReport:
    """Clicks on the middle slice of synthetic z-stacks and propagation through them.

    Per stack: every nucleus and cell of at least ``min_area`` px on the middle slice gets a click
    at its centre (``click_iou``); the largest of each class is propagated up and down the stack
    (``direction="both"``) and compared, on every slice where its section has at least 30 px,
    with that section (``propagation_iou``; ``identity_kept``: objects with IoU >= 0.5 on all of
    them, out of those propagated).
    """
    seg = make_segmenter(model, **segmenter_options)
    clicks: dict[str, list[float]] = {"nucleus": [], "cell": []}
    props: dict[str, list[float]] = {"nucleus": [], "cell": []}
    kept: dict[str, list[bool]] = {"nucleus": [], "cell": []}
    for i in range(n_stacks):
        stack = make_sequence(n_slices, (256, 256), seed=seed + i, axis="z")
        mid = n_slices // 2
        for class_name, maps in (("nucleus", stack.nuclei), ("cell", stack.cells)):
            seg.set_image(stack.image[mid])  # again: propagating the previous class moved the segmenter on
            ids, areas = np.unique(maps[mid][maps[mid] > 0], return_counts=True)
            results = {}
            for obj, area in zip(ids.tolist(), areas.tolist()):
                if area < min_area:
                    continue
                result = seg.predict(ObjectPrompt(points=[object_centre(stack.instances[mid], obj)]))
                clicks[class_name].append(iou(result.masks[0], maps[mid] == obj))
                results[obj] = result
            if not results:
                continue
            largest = max(results, key=lambda k: int((maps[mid] == k).sum()))
            seeds = results[largest]
            seeds.object_ids = np.array([largest])
            ious = []
            for z, result in seg.propagate(stack.image, mid, seeds, direction="both"):
                truth = maps[z] == largest
                if z == mid or truth.sum() < 30:
                    continue
                same = len(result) and result.object_ids[0] == largest
                ious.append(iou(result.masks[0], truth) if same else 0.0)
            present = [z for z in range(n_slices) if z != mid and (maps[z] == largest).sum() >= 30]
            if not present:  # only in the middle slice: nothing to propagate to
                continue
            ious += [0.0] * (len(present) - len(ious))  # the slices after it was given up
            props[class_name].extend(ious)
            kept[class_name].append(min(ious) >= 0.5)
    return ZStackReport(
        click_iou={k: float(np.mean(v)) for k, v in clicks.items() if v},
        propagation_iou={k: float(np.mean(v)) for k, v in props.items() if v},
        identity_kept={k: (int(sum(v)), len(v)) for k, v in kept.items() if v},
    )
