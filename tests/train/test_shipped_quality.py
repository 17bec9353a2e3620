"""Segmentation quality of the shipped model on held-out synthetic images, through the engine.

Two kinds of checks:

* a regression floor (must pass): single-click IoU well above what the same architecture gives
  with random weights (the floor is ~70 % of the shipped model's measured value, the random
  model scores < 0.05), so a broken model, engine or preprocessing fails CI;
* issue 6's acceptance targets (``benchmarks/eval_shipped_model.py`` measures them on the full
  evaluation set): asserted on a small held-out set, so a regression fails CI.
"""
import importlib

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
import torch

from napari_seem.engine import ObjectPrompt
from napari_seem.model import build_seem
from napari_seem.synthetic import make_image, object_centre
from napari_seem.train.evaluate import (
    EVAL_SEED,
    _correct,
    _noc,
    _propagation,
    _targets,
    _truth,
    evaluate,
    iou,
    iou_matrix,
    make_segmenter,
    matched_ious,
)
from napari_seem.weights import load_shipped_model, load_shipped_refiner, load_shipped_refiners, shipped_model_path

#: single click at the object's centre, mean IoU over 2 held-out 256² images (28 objects)
CLICK_FLOOR = {"nucleus": 0.56, "cell": 0.44}  # measured: 0.83 / 0.85 (cells 0.64 without the cut between nuclei; SEEM's raw masks: 0.32 / 0.39)
#: text prompt "nucleus": mean IoU over the 14 true nuclei of the same 2 images (missed = 0)
TEXT_FLOOR = 0.48  # measured: 0.82 (0.78 without the click on each object found, 0.77 before text search left other classes out of its merge; raw masks: 0.50)
#: clicks to 85 % IoU (max 20), first 4 cells of 4 held-out images (16 objects; until 2026-12-06
#: "the first 4 objects", which are these same cells)
NOC_CEILING = 6.5  # measured: 3.5 (4.4 without the cut between a cell's nuclei, without the negative-click cut 9.6, without the growth at positive clicks 5.8, without both 10.7)
#: the same on the first 4 nuclei of the 4 images: small objects, where 85 % IoU needs boundaries
#: right to about a pixel
NOC_CEILING_NUCLEI = 12.5  # measured: 6.5 (8.5 without the shape priors, 7.6 without the growth at positive clicks, 8.2 without both growths)


def click_ious(model, n_images: int = 2, shape: tuple[int, int] = (256, 256), exposure: float = 1.0,
               normalize: str = "auto", **segmenter_options) -> dict[str, float]:
    """Single click at each object's centre; ``exposure`` scales the (8-bit) images' intensities."""
    seg = make_segmenter(model, **segmenter_options)
    ious: dict[str, list[float]] = {"nucleus": [], "cell": []}
    for i in range(n_images):
        s = make_image(shape, seed=EVAL_SEED + i)
        image = s.image if exposure == 1.0 else np.round(s.image * exposure).astype(s.image.dtype)
        seg.set_image(image, normalize=normalize)
        for obj, full, _ in _targets(s, min_area=60):
            result = seg.predict(ObjectPrompt(points=[object_centre(s.instances, obj["id"])]))
            ious[obj["class"]].append(iou(result.masks[0], full))
    return {k: float(np.mean(v)) for k, v in ious.items()}


def clicks_to_85(model, class_name: str = "cell", n_images: int = 4, per_image: int = 4, **segmenter_options) -> float:
    seg = make_segmenter(model, **segmenter_options)
    counts: list[int] = []
    for i in range(n_images):
        s = make_image((256, 256), seed=EVAL_SEED + i)
        seg.set_image(s.image)
        objects = [(obj, full) for obj, full, _ in _targets(s, min_area=60) if obj["class"] == class_name]
        for obj, full in objects[:per_image]:
            point = object_centre(s.instances, obj["id"])
            counts.append(_noc(seg, full, point, seg.predict(ObjectPrompt(points=[point])), 20))
    return float(np.mean(counts))


def text_iou(model, n_images: int = 2, first: int = 0, shape: tuple[int, int] = (256, 256),
             **segmenter_options) -> float:
    seg = make_segmenter(model, **segmenter_options)
    ious: list[float] = []
    for i in range(first, first + n_images):
        s = make_image(shape, seed=EVAL_SEED + i)
        seg.set_image(s.image)
        ious.extend(matched_ious(seg.predict(text="nucleus"), _truth(s, "nucleus")).tolist())
    return float(np.mean(ious))


def referring_iou(model, class_name: str = "nucleus", n_images: int = 2, **options) -> tuple[float, list[str]]:
    """The largest ``class_name`` object of held-out image ``i`` as the example, searched for on
    image ``i + 1``: mean IoU over that image's true objects of the class (instance-matched,
    missed = 0), and the class names of the objects found."""
    seg = make_segmenter(model)
    ious: list[float] = []
    names: list[str] = []
    for i in range(n_images):
        a, b = make_image((256, 256), seed=EVAL_SEED + i), make_image((256, 256), seed=EVAL_SEED + i + 1)
        example = max((o["id"] for o in a.objects if o["class"] == class_name), key=lambda k: (a.instances == k).sum())
        found = seg.find_similar(a.image, a.instances == example, b.image, **options)
        ious.extend(matched_ious(found, _truth(b, class_name)).tolist())
        names.extend(found.class_names)
    return float(np.mean(ious)), names


@pytest.fixture(scope="module")
def shipped():
    return load_shipped_model("seem_tiny_synthetic")


@pytest.fixture(scope="module")
def shipped_refiners():
    refiners = load_shipped_refiners("seem_tiny_synthetic")
    assert [r.classes for r in refiners] == [("nucleus",), ("cell",)], "a shipped outline refiner is missing"
    return refiners


@pytest.fixture(scope="module")
def shipped_refiner():
    refiner = load_shipped_refiner("seem_tiny_synthetic")
    assert refiner is not None, "the shipped outline refiner is missing from the package"
    return refiner


#: single click on the nuclei of the 2 held-out images of CLICK_FLOOR, with the outline refiner
REFINED_NUCLEUS_FLOOR = 0.85  # measured: 0.906 (0.829 without it)
#: clicks to 85 % IoU on the first 4 nuclei of 4 held-out images, with the refiner
REFINED_NOC_CEILING_NUCLEI = 4.5  # measured: 2.9 (6.5 without it)


def test_the_outline_refiner_draws_nuclei_to_the_pixel(shipped, shipped_refiner):
    """SEEM's stride-4 logits place a nucleus's outline a pixel or two off; the refiner draws it
    again at full resolution: single clicks and corrections on held-out nuclei, cells untouched."""
    plain = click_ious(shipped)
    refined = click_ious(shipped, refiner=shipped_refiner)
    assert refined["nucleus"] >= REFINED_NUCLEUS_FLOOR, refined
    assert refined["nucleus"] >= plain["nucleus"] + 0.04, (plain, refined)
    assert refined["cell"] >= plain["cell"] - 0.01, (plain, refined)  # it only redraws objects named nucleus
    noc = clicks_to_85(shipped, "nucleus", refiner=shipped_refiner)
    assert noc <= REFINED_NOC_CEILING_NUCLEI, noc


def test_text_search_outlines_its_nuclei_with_the_refiner(shipped, shipped_refiner):
    """Text search outlines every object it finds again from a click (``refine_text``); the
    nuclei among them are redrawn by the refiner too."""
    plain = text_iou(shipped)
    refined = text_iou(shipped, refiner=shipped_refiner)
    assert refined >= 0.85 and refined >= plain + 0.04, (plain, refined)  # measured: 0.901 (0.821 without)


def test_the_refiner_of_cells_draws_clicked_cells(shipped, shipped_refiner, shipped_refiners):
    """The shipped refiner of cells (a 96 px window) draws a clicked cell again at full resolution;
    nuclei are the nuclei refiner's alone."""
    nuclei_only = click_ious(shipped, refiner=shipped_refiner)
    both = click_ious(shipped, refiner=shipped_refiners)
    assert both["cell"] >= 0.85 and both["cell"] >= nuclei_only["cell"] + 0.03, (nuclei_only, both)  # measured: 0.923 (0.853 without it)
    assert both["nucleus"] == pytest.approx(nuclei_only["nucleus"], abs=1e-9)


def test_a_cell_clicked_where_seem_gives_its_neighbour_is_drawn_by_its_refiner(shipped, shipped_refiners, monkeypatch):
    """Held-out time-lapse 10020: the click on the largest cell gives SEEM's mask of the cell beside
    it (IoU 0.25 on frame 1), and the track is lost. The refiner of cells, trained on such masks,
    draws the clicked cell, and its outline is taken whatever its overlap with SEEM's mask
    (``CLICKED_AGREEMENT``): the cell is followed through all 20 frames (measured mean 0.86, min 0.78)."""
    seg = make_segmenter(shipped, refiner=shipped_refiners)
    ious, kept = _propagation(seg, 10020, "cell")
    assert kept and min(ious) >= 0.7, np.round(ious, 2)
    monkeypatch.setattr(importlib.import_module("napari_seem.engine.segmenter"), "CLICKED_AGREEMENT", {})
    ious, kept = _propagation(seg, 10020, "cell")
    assert not kept   # taking the refiner's outline is what keeps it


@pytest.mark.parametrize("seed, cell, without_rule", [(9088, 1, 0.124), (9380, 4, 0.040)])
def test_a_cell_clicked_beside_its_neighbour_is_decoded_again_at_its_nucleus(shipped, shipped_refiners, monkeypatch,
                                                                            seed, cell, without_rule):
    """Held-out images: the click in the cell's cytoplasm gives (most of) the touching cell beside
    it, with that cell's nucleus and without its own. The nearest nucleus and the intensity basin
    of the click both name the clicked cell's nucleus, so the cell is decoded again with a second
    click there (``napari_seem.engine.clicked_cell``; measured IoU 0.959 and 0.923)."""
    s = make_image((256, 256), seed=seed)
    seg = make_segmenter(shipped, refiner=shipped_refiners)
    seg.set_image(s.image)
    point = object_centre(s.instances, cell)
    truth = s.cells == cell
    result = seg.predict(ObjectPrompt(points=[point]))
    assert result.class_names == ["cell"] and iou(result.masks[0], truth) >= 0.85
    segmenter_module = importlib.import_module("napari_seem.engine.segmenter")
    monkeypatch.setattr(segmenter_module, "missed_nucleus", lambda *args, **kwargs: 0)
    alone = seg.predict(ObjectPrompt(points=[point]))
    assert iou(alone.masks[0], truth) <= without_rule + 0.05   # the second decoding is what draws it
    # among other objects' prompts, the cell alone is decoded again, as it was on its own
    other = object_centre(s.instances, next(o["id"] for o in s.objects if o["id"] != cell and o["class"] == "nucleus"))
    prompts = [ObjectPrompt(points=[other]), ObjectPrompt(points=[point])]
    plain = seg.predict(prompts)
    nuclei, _ = seg._nucleus_labels(seg._state())
    own = np.bincount(nuclei[truth & (s.nuclei > 0)]).argmax()
    monkeypatch.setattr(segmenter_module, "missed_nucleus",
                        lambda mask, clicked, *args, **kwargs: own if tuple(clicked) == tuple(point) else 0)
    both = seg.predict(prompts)
    assert np.array_equal(both.masks[0], plain.masks[0]) and np.array_equal(both.masks[1], result.masks[0])
    assert both.class_names[1] == "cell" and np.array_equal(both.object_ids, [1, 2])


def test_a_propagated_cell_is_redrawn_by_its_refiner(shipped, shipped_refiners, monkeypatch):
    """Held-out time-lapse 10023: the largest cell's mask loses its outline frame by frame (mean
    0.78, 0.66 by frame 18); drawn again by the refiner of cells on every frame (``redraw_cells``)
    it keeps it (measured mean 0.92, min 0.82)."""
    seg = make_segmenter(shipped, refiner=shipped_refiners)
    ious, kept = _propagation(seg, 10023, "cell")
    assert kept and np.mean(ious) >= 0.88 and min(ious) >= 0.75, np.round(ious, 2)
    monkeypatch.setattr(importlib.import_module("napari_seem.engine.propagate"), "redraw_cells",
                        lambda *args, **kwargs: [])
    without, _ = _propagation(seg, 10023, "cell")
    assert np.mean(without) <= np.mean(ious) - 0.1, np.round(without, 2)


def test_from_pretrained_gives_the_shipped_model_its_refiner():
    from napari_seem.engine import Segmenter

    seg = Segmenter.from_pretrained("seem_tiny_synthetic", device="cpu")
    assert [(r.classes, r.window) for r in seg.refiners] == [(("nucleus",), 64), (("cell",), 96)]
    s = make_image((256, 256), seed=EVAL_SEED)
    seg.set_image(s.image)
    nucleus = next(o for o in s.objects if o["class"] == "nucleus" and (s.instances == o["id"]).sum() >= 60)
    point = object_centre(s.instances, nucleus["id"])
    refined = seg.predict(ObjectPrompt(points=[point]))
    seg.refiner = None
    plain = seg.predict(ObjectPrompt(points=[point]))
    assert refined.class_names == plain.class_names == ["nucleus"]
    assert not np.array_equal(refined.masks[0], plain.masks[0])
    np.testing.assert_array_equal(refined.memory, plain.memory)  # SEEM's memory is its own logits


def test_shipped_model_segments_held_out_images(shipped):
    measured = click_ious(shipped)
    for name, floor in CLICK_FLOOR.items():
        assert measured[name] >= floor, f"single-click IoU on {name}: {measured[name]:.3f} < {floor}"


def test_shipped_model_finds_nuclei_by_text(shipped):
    measured = text_iou(shipped)
    assert measured >= TEXT_FLOOR, f"text 'nucleus' IoU {measured:.3f} < {TEXT_FLOOR}"


def test_one_region_per_object_removes_look_alikes(shipped):
    """The tiny model's click masks also light up similar objects elsewhere (its last training
    phase does not penalise them: the engine drops them); keeping the region under the click,
    the engine's default, is what lifts the IoU above the floor."""
    kept = click_ious(shipped)
    raw = click_ious(shipped, connected_objects=False)
    assert kept["nucleus"] >= raw["nucleus"] + 0.15, (kept, raw)
    assert kept["cell"] >= raw["cell"] + 0.05, (kept, raw)


def test_negative_clicks_correct_leaks(shipped, monkeypatch):
    """Corrective clicks (simulated at the largest error) reach 85 % IoU in few clicks; the tiny
    model barely reacts to a negative click by itself, the engine's cut at negative clicks is
    what makes them work."""

    measured = clicks_to_85(shipped)
    assert measured <= NOC_CEILING, f"NoC@85 {measured:.2f} > {NOC_CEILING}"
    # the cut at negative clicks on its own (the cut between a cell's nuclei also removes leaks)
    with_cut = clicks_to_85(shipped, cells_hold_one_nucleus=False)
    segmenter_module = importlib.import_module("napari_seem.engine.segmenter")
    monkeypatch.setattr(segmenter_module, "cut_at_negatives", lambda mask, *args: mask)
    assert clicks_to_85(shipped, cells_hold_one_nucleus=False) >= with_cut + 3


def test_corrective_clicks_on_nuclei(shipped, monkeypatch):
    """Nuclei start close (single click 0.8 IoU) but the last pixels of their boundary are what
    85 % IoU asks for; the tiny model mostly ignores a click on a thin missed rim (see the model
    card), the engine's growth of the mask at a positive click outside it is what makes such
    clicks count."""

    measured = clicks_to_85(shipped, "nucleus")
    assert measured <= NOC_CEILING_NUCLEI, f"NoC@85 on nuclei {measured:.2f} > {NOC_CEILING_NUCLEI}"
    segmenter_module = importlib.import_module("napari_seem.engine.segmenter")
    monkeypatch.setattr(segmenter_module, "grow_at_marks", lambda mask, *args, **kwargs: mask)
    monkeypatch.setattr(segmenter_module, "grow_toward_positive_clicks", lambda mask, *args, **kwargs: mask)
    assert clicks_to_85(shipped, "nucleus") >= measured + 1.5  # measured 8.2 without both growths


def test_a_negative_click_cuts_a_nucleus_on_its_whole_side(shipped):
    """A negative click on an object named nucleus cuts it along the line through the click,
    square to the direction from its first click, and a positive click outside it grows its
    whole side (``shape_priors``, engine/connected.py): most corrective clicks on nuclei land on
    a thin rim of excess or of missed pixels, which the model and the other rules mend only at
    the click. Measured on the 16 nuclei: 6.5 against 8.5 (the cut alone: 6.2)."""
    on = clicks_to_85(shipped, "nucleus")
    off = clicks_to_85(shipped, "nucleus", shape_priors=False)
    assert on <= off - 1.0, (on, off)
    # cells grow toward a positive click only within 30 degrees of its direction: on these 16
    # cells 3.5 either way (on 128 cells of images 9030-9044: 3.66 -> 3.47)
    assert clicks_to_85(shipped, "cell") <= clicks_to_85(shipped, "cell", shape_priors=False)


def test_random_weights_do_not_reach_the_floor():
    """The floor discriminates: the same architecture with random weights stays far below it."""
    torch.manual_seed(0)
    random_model = build_seem(shipped_model_path("seem_tiny_synthetic")[1]).eval()
    measured = click_ious(random_model)
    assert all(measured[name] < floor / 2 for name, floor in CLICK_FLOOR.items()), measured
    assert text_iou(random_model) < TEXT_FLOOR / 2


def test_issue_6_acceptance_targets(shipped, shipped_refiners):
    """Issue 6's targets on a small held-out set (2 images, 1 time-lapse), the shipped model with
    both its refiners, as ``from_pretrained`` runs it. Measured: nuclei 0.900, cells 0.923, NoC@85
    1.5, text 0.896, class names 100 %, propagation 0.904 with both objects kept. (Until the refiner
    of cells, 2026-12-07, evening, this failed on NoC, propagation and identity; on the full
    evaluation set every target is met since a click's own nucleus, see the model card.)"""
    report = evaluate(shipped, n_images=2, n_sequences=1, noc_per_class=1, refiner=shipped_refiners)
    assert report.click_iou["nucleus"] >= 0.85
    assert report.click_iou["cell"] >= 0.75
    assert report.noc85 <= 3
    assert report.text_nucleus_iou >= 0.75
    assert report.automatic_class_accuracy >= 0.9
    assert report.propagation_iou >= 0.8
    assert report.propagation_identity == 1.0


@pytest.mark.parametrize("seed", [10008, 10013])
def test_a_propagated_nucleus_does_not_creep_into_its_cell(shipped, seed):
    """Held-out time-lapses where the memory of the largest nucleus creeps, frame by frame, into
    the cytoplasm around it (to 2.7x and 3.1x its true area by frame 19, IoU 0.37 and 0.32) unless
    each frame's mask is checked against a click at its centre (``reanchor_nuclei``)."""
    ious, kept = _propagation(make_segmenter(shipped), seed, "nucleus")
    assert kept and min(ious) >= 0.6, np.round(ious, 2)   # measured: min 0.80 / 0.69 (mean 0.88 / 0.83)
    ious, kept = _propagation(make_segmenter(shipped, shape_priors=False), seed, "nucleus")
    assert not kept   # the rule is what keeps it


def test_a_clicked_cell_does_not_take_its_touching_neighbour(shipped):
    """Held-out time-lapse 10007: the click on the largest cell of frame 0 gives a mask over it and
    the cell touching it (IoU 0.48 with the cell; a neck joins the two), and propagation carries
    both. Split at the neck (``split_touching_cells``, with ``shape_priors``): IoU 0.83, and the
    cell is followed through all 20 frames (measured mean 0.75, min 0.64; before: 0.42, min 0.33)."""
    ious, kept = _propagation(make_segmenter(shipped), 10007, "cell")
    assert kept and np.mean(ious) >= 0.65, np.round(ious, 2)
    ious, kept = _propagation(make_segmenter(shipped, shape_priors=False), 10007, "cell")
    assert not kept   # the rule is what keeps it


def test_a_propagated_nucleus_is_redrawn_by_the_outline_refiner(shipped, shipped_refiner, monkeypatch):
    """Held-out time-lapse 10027: the largest nucleus stands out little from its cytoplasm, and the
    memory lags behind it as its cell moves, until by frame 12 the mask has slid off it (IoU 0 from
    frame 13). Drawn again by the outline refiner each frame (``redraw_outlines``) it is followed
    through all 20 frames (measured mean 0.74, min 0.67)."""
    seg = make_segmenter(shipped, refiner=shipped_refiner)
    ious, kept = _propagation(seg, 10027, "nucleus")
    assert kept and min(ious) >= 0.6, np.round(ious, 2)
    monkeypatch.setattr(importlib.import_module("napari_seem.engine.propagate"), "redraw_outlines",
                        lambda *args, **kwargs: [])
    ious, kept = _propagation(seg, 10027, "nucleus")
    assert not kept   # the redraw is what keeps it


def test_a_propagated_cell_does_not_turn_into_its_nucleus(shipped, shipped_refiner, monkeypatch):
    """Held-out time-lapse 10011: on frame 6 the decoder, prompted with the largest cell's mask,
    returns only its nucleus (named ``nucleus``), and the track follows the nucleus from then on
    (IoU 0.28 by frame 11). Decoded again from its cytoplasm (``keep_cells``) it stays the cell
    (measured mean 0.77, min 0.61)."""
    seg = make_segmenter(shipped, refiner=shipped_refiner)
    ious, kept = _propagation(seg, 10011, "cell")
    assert kept and np.mean(ious) >= 0.7, np.round(ious, 2)
    monkeypatch.setattr(importlib.import_module("napari_seem.engine.propagate"), "keep_cells",
                        lambda *args, **kwargs: [])
    ious, kept = _propagation(seg, 10011, "cell")
    assert not kept   # the rule is what keeps it


def test_a_nucleus_leaving_the_image_is_redrawn_smaller_than_its_seed(shipped, shipped_refiner, monkeypatch):
    """Held-out time-lapse 11016: the largest nucleus leaves the image across its edge and its
    visible part shrinks below 75 % of the seed's area, so the redrawn outline was refused as a
    fragment and the mask leaked into the cell beside it (IoU 0.36 on frame 19). Near the edge the
    redraw is compared with the last outline drawn (``near_edge``): measured mean 0.88, min 0.80."""
    seg = make_segmenter(shipped, refiner=shipped_refiner)
    ious, kept = _propagation(seg, 11016, "nucleus")
    assert kept and min(ious) >= 0.7, np.round(ious, 2)
    monkeypatch.setattr(importlib.import_module("napari_seem.engine.propagate"), "near_edge",
                        lambda *args: False)
    ious, kept = _propagation(seg, 11016, "nucleus")
    assert not kept   # the rule is what keeps it


def test_a_nucleus_leaving_the_image_is_redrawn_at_half_its_last_outline(shipped, shipped_refiner, monkeypatch):
    """Held-out time-lapse 9019: the largest nucleus leaves the image across its top edge, its
    visible part shrinking by about a quarter per frame. Near the edge, a redrawn outline had to be
    75 % of the last one: on frame 15 it was refused at 167 px (bound 174, truth 181), the mask leaked
    into the cell and the track was lost (IoU 0.34 on frame 17). With half the last outline
    (``EDGE_SHARE``): measured mean 0.86, min 0.69."""
    propagate_module = importlib.import_module("napari_seem.engine.propagate")
    seg = make_segmenter(shipped, refiner=shipped_refiner)
    ious, kept = _propagation(seg, 9019, "nucleus")
    assert kept and min(ious) >= 0.6, np.round(ious, 2)
    monkeypatch.setattr(propagate_module, "EDGE_SHARE", propagate_module.LEAK_SEED_SHARE)
    ious, kept = _propagation(seg, 9019, "nucleus")
    assert not kept   # the lower bound near the edge is what keeps it


def test_a_leak_of_a_propagated_nucleus_is_cut_back_by_the_refiner(shipped, shipped_refiner, monkeypatch):
    """Held-out time-lapse 11023, frame 16: the largest nucleus, leaving the image, is 88 px; its
    propagated mask leaks into the cell beside it (197 px). The refiner draws the nucleus (97 px),
    but kept the mask it overlapped by less than ``MIN_AGREEMENT`` (IoU 0.44 on that frame, 0.06 by
    frame 19). The outline lies within the mask, so it is taken (``INSIDE_SHARE``): measured IoU
    0.87 on frame 16. (On its last frames the nucleus is a sliver of 20–60 px, and the object is
    still lost by frame 19: 0.38.)"""
    propagate_module = importlib.import_module("napari_seem.engine.propagate")
    seg = make_segmenter(shipped, refiner=shipped_refiner)
    ious, _ = _propagation(seg, 11023, "nucleus")
    assert min(ious[:16]) >= 0.8, np.round(ious, 2)
    monkeypatch.setattr(propagate_module, "INSIDE_SHARE", None)
    ious, _ = _propagation(seg, 11023, "nucleus")
    assert ious[15] < 0.5, np.round(ious, 2)   # taking the outline drawn inside is what keeps frame 16


def test_a_nucleus_named_cell_on_some_frames_is_still_redrawn(shipped, shipped_refiner, monkeypatch):
    """Held-out time-lapse 9022: around frame 11 the largest nucleus's mask grows into its cell and the
    decoder names it ``cell``. When only objects still named ``nucleus`` were redrawn, the mask then
    followed the cell (IoU 0.35 by frame 16). An object that started as a nucleus is redrawn
    whatever its name (``redraw_outlines``): measured mean 0.91, min 0.88."""
    propagate_module = importlib.import_module("napari_seem.engine.propagate")
    seg = make_segmenter(shipped, refiner=shipped_refiner)
    ious, kept = _propagation(seg, 9022, "nucleus")
    assert kept and min(ious) >= 0.8, np.round(ious, 2)
    redraw = propagate_module.redraw_outlines

    def named_nuclei_only(segmenter, result, started, drawn=None):  # the rule before: skip objects named otherwise
        other = {int(result.object_ids[k]) for k in range(len(result)) if result.class_names[k] != "nucleus"}
        return redraw(segmenter, result, {i: v for i, v in started.items() if i not in other}, drawn)

    monkeypatch.setattr(propagate_module, "redraw_outlines", named_nuclei_only)
    ious, kept = _propagation(seg, 9022, "nucleus")
    assert not kept   # redrawing it whatever its name is what keeps it


def test_a_rim_of_a_redrawn_nucleus_is_not_a_nucleus(shipped, shipped_refiner, monkeypatch):
    """Held-out time-lapse 10025, frame 0: text search finds a 29 px piece along a nucleus's
    outline; once the refiner has drawn that nucleus tighter, 23 px of it were left as a nucleus of
    their own, the click on the largest cell took that piece as the cell's own nucleus and was cut
    off from the real one (IoU 0.26). Dropped as a rim (``_is_rim``): IoU 0.97."""
    from napari_seem.synthetic import make_sequence

    seq = make_sequence(20, (256, 256), seed=10025, axis="t")
    tracks = [t for t in seq.tracks if t["n_frames"] == 20 and t["class"] == "cell"]
    cell = max(tracks, key=lambda t: (seq.cells[0] == t["id"]).sum())["id"]
    seg = make_segmenter(shipped, refiner=shipped_refiner)
    seg.set_image(seq.image[0])
    point = object_centre(seq.instances[0], cell)
    assert iou(seg.predict(ObjectPrompt(points=[point])).masks[0], seq.cells[0] == cell) >= 0.9
    monkeypatch.setattr(importlib.import_module("napari_seem.engine.refine"), "RIM_SHARE", 2.0)  # no rims
    seg = make_segmenter(shipped, refiner=shipped_refiner)  # text search's nuclei found again
    seg.set_image(seq.image[0])
    assert iou(seg.predict(ObjectPrompt(points=[point])).masks[0], seq.cells[0] == cell) < 0.5


def test_corrective_clicks_and_the_corrected_propagation_diagnostic(shipped):
    """``_correct`` stops at 85 % IoU (or returns the last result after ``max_clicks``);
    ``evaluate(corrected_propagation=True)`` propagates from that corrected first frame."""
    seg = make_segmenter(shipped)
    s = make_image((256, 256), seed=EVAL_SEED)
    seg.set_image(s.image)
    reached = 0
    for obj, full, _ in list(_targets(s, min_area=60))[:4]:
        point = object_centre(s.instances, obj["id"])
        first = seg.predict(ObjectPrompt(points=[point]))
        clicks, corrected = _correct(seg, full, point, first, 20)
        assert 1 <= clicks <= 20
        if clicks == 1:
            assert corrected is first
        if clicks < 20:
            reached += 1
            assert iou(corrected.masks[0], full) >= 0.85
    assert reached >= 2, "corrective clicks reached 85 % IoU on fewer than 2 of 4 objects"
    plain = evaluate(shipped, n_images=1, n_sequences=1, noc_per_class=1)
    assert np.isnan(plain.propagation_corrected_iou)
    # NoC over one nucleus and one cell, reported per class and as their mean
    assert plain.counts["noc_nucleus"] == plain.counts["noc_cell"] == 1
    assert set(plain.noc85_by_class) == {"nucleus", "cell"}
    assert plain.noc85 == pytest.approx(np.mean(list(plain.noc85_by_class.values())))
    report = evaluate(shipped, n_images=1, n_sequences=1, noc_per_class=1, corrected_propagation=True)
    assert report.propagation_iou == plain.propagation_iou
    assert 0.0 <= report.propagation_corrected_iou <= 1.0
    assert 0.0 <= report.propagation_corrected_identity <= 1.0


def test_text_search_merges_a_nucleus_split_between_two_queries(shipped, monkeypatch):
    """Two object queries on one nucleus split it in SEEM's panoptic merge; the engine joins the
    touching halves (``merge_duplicate_labels``). Held-out images 0-11 (the shipped weights split
    nuclei on 4 of them): never more objects nor a lower IoU, fewer and better in all. Measured
    without the click on each object found that text search makes afterwards (with it, the pieces
    of a split nucleus are also outlined again, and the merge's effect is within 0.003 a image)."""

    def per_image(n_images=12):
        seg = make_segmenter(shipped, refine_text=False)  # the merge on its own (the click on each object found would follow it)
        counts, ious = [], []
        for i in range(n_images):
            s = make_image((256, 256), seed=EVAL_SEED + i)
            seg.set_image(s.image)
            nuclei = np.stack([s.nuclei == o["id"] for o in s.objects if o["class"] == "nucleus"])
            found = seg.predict(text="nucleus")
            matrix = iou_matrix(found.masks, nuclei)
            rows, cols = linear_sum_assignment(-matrix)
            counts.append(len(found))
            ious.append(matrix[rows, cols].sum() / len(nuclei))
        return np.array(counts), np.array(ious)

    merged_counts, merged_ious = per_image()
    segmenter_module = importlib.import_module("napari_seem.engine.segmenter")
    monkeypatch.setattr(segmenter_module, "merge_duplicate_labels",
                        lambda segments, queries, classes, *args: [[k] for k in range(len(classes))])
    split_counts, split_ious = per_image()
    assert (merged_counts <= split_counts).all() and merged_counts.sum() < split_counts.sum()
    assert (merged_ious >= split_ious - 1e-9).all() and merged_ious.sum() > split_ious.sum()


def test_text_search_keeps_other_classes_out_of_its_nuclei(shipped, monkeypatch):
    """Text search merges only the queries that name the phrase: a cell query no longer takes
    part of a nucleus (in SEEM's panoptic merge every pixel goes to one query of any class, and a
    nucleus lies inside its cell). Held-out images 0-5: +0.026 on the whole (measured), no image
    lower by 0.01 or more."""
    from napari_seem.engine.segmenter import Segmenter

    def per_image(n_images=6):  # the rule on its own (the click on each object found follows it)
        return [text_iou(shipped, n_images=1, first=i, refine_text=False) for i in range(n_images)]

    with_rule = per_image()
    original = Segmenter._panoptic
    monkeypatch.setattr(Segmenter, "_panoptic",
                        lambda self, vocab, score, overlap, only=None: original(self, vocab, score, overlap))
    without = per_image()
    assert np.mean(with_rule) >= np.mean(without) + 0.02, (with_rule, without)
    assert min(np.subtract(with_rule, without)) > -0.01, (with_rule, without)


def test_tiles_at_the_training_size_find_more_nuclei_in_a_larger_field(shipped):
    """A 512² field holds ~55 nuclei and ~40 cells, more objects than the model's 64 queries
    comfortably give: text search tile by tile (256 px, the training images' size, 64 px overlap)
    against the whole field at once. Measured on fields 7000-7001: 0.658 / 0.710 tiled, 0.576 /
    0.685 whole; with the click on each object found (the default), 0.741 / 0.797 against 0.703
    / 0.791."""
    from napari_seem.engine import segment_tiled

    for refine, gain in ((False, 0.03), (True, 0.01)):
        seg = make_segmenter(shipped, refine_text=refine)
        whole, tiled = [], []
        for seed in (7000, 7001):
            s = make_image((512, 512), seed=seed, n_cells=(48, 64))
            nuclei = np.stack([s.nuclei == o["id"] for o in s.objects if o["class"] == "nucleus"])
            seg.set_image(s.image)
            for result, out in ((seg.predict(text="nucleus"), whole),
                                (segment_tiled(seg, s.image, text="nucleus"), tiled)):
                matrix = iou_matrix(result.masks, nuclei)
                rows, cols = linear_sum_assignment(-matrix)
                out.append(matrix[rows, cols].sum() / len(nuclei))
        assert np.mean(tiled) >= np.mean(whole) + gain, (refine, tiled, whole)
        assert min(np.subtract(tiled, whole)) > 0, (refine, tiled, whole)


def test_text_search_outlines_each_object_found_with_a_click(shipped):
    """Text search decodes every object found again from a click at its centre and takes that
    outline where it agrees (engine/refine.py). Held-out images 0-11, measured: 0.730 -> 0.755 on
    the whole, 10 of 12 images better, the worst one 0.034 lower."""
    on = np.array([text_iou(shipped, n_images=1, first=i) for i in range(12)])
    off = np.array([text_iou(shipped, n_images=1, first=i, refine_text=False) for i in range(12)])
    assert on.mean() >= off.mean() + 0.015, (on, off)
    assert (on > off).sum() >= 8 and (on - off).min() > -0.06, (on, off)


def test_a_clicked_cell_is_cut_between_its_nucleus_and_its_neighbours(shipped):
    """A click on a cell whose mask leaks over its neighbours' nuclei loses the neighbours
    (``cells_hold_one_nucleus``, engine/connected.py). Held-out images 0-5, measured: cells 0.709
    -> 0.818, nuclei unchanged (0.742)."""
    on = click_ious(shipped, n_images=6)
    off = click_ious(shipped, n_images=6, cells_hold_one_nucleus=False)
    assert on["cell"] >= off["cell"] + 0.05, (on, off)
    assert on["nucleus"] >= off["nucleus"] - 0.005, (on, off)


def test_an_image_of_any_size_segments_as_well_as_the_training_sizes(shipped):
    """The shipped model was trained on images whose sides are multiples of 32 px, and never saw
    the zero (mean-colour) band the official preprocessing pads other sizes with; its config pads
    by replicating the last row and column instead (``INPUT.PAD_MODE: replicate``). Held-out
    images 0-5 at 230 x 270, measured: single click 0.714 / 0.736 and text 0.671, against 0.646 /
    0.620 and 0.506 with zeros (60 images: 0.799 / 0.802 and 0.775 against 0.648 / 0.602 and
    0.457; at 256 x 256 0.797 / 0.799 and 0.772)."""
    shape = (230, 270)
    assert shipped.pad_mode == "replicate"
    replicated = click_ious(shipped, n_images=6, shape=shape), text_iou(shipped, n_images=6, shape=shape)
    shipped.pad_mode = "zeros"
    try:
        zeros = click_ious(shipped, n_images=6, shape=shape), text_iou(shipped, n_images=6, shape=shape)
    finally:
        shipped.pad_mode = "replicate"
    for name, floor in CLICK_FLOOR.items():
        assert replicated[0][name] >= floor, (name, replicated)
        assert replicated[0][name] >= zeros[0][name] + 0.05, (name, replicated, zeros)
    assert replicated[1] >= TEXT_FLOOR and replicated[1] >= zeros[1] + 0.1, (replicated, zeros)


def test_an_image_smaller_than_the_training_images_is_padded_up_to_their_size(shipped):
    """The model learnt object sizes on a 192-256 px canvas; a smaller image is padded (by
    replication) to 256 px (``INPUT.MIN_PADDED_SIZE``). Held-out images 0-9 at 160 x 160, measured:
    single click 0.758 / 0.757 and text 0.720, against 0.730 / 0.722 and 0.670 unpadded (60 images:
    0.778 / 0.749 and 0.729 against 0.701 / 0.651 and 0.569). Images 0-5 alone, which this test
    used until the split of cells at a neck lifted the unpadded cells there from 0.658 to 0.686,
    leave padding only 0.019 ahead on cells: too few cells to measure a 0.02 gain."""
    shape = (160, 160)
    assert shipped.min_padded_size == 256
    padded = click_ious(shipped, n_images=10, shape=shape), text_iou(shipped, n_images=10, shape=shape)
    shipped.min_padded_size = 0
    try:
        unpadded = click_ious(shipped, n_images=10, shape=shape), text_iou(shipped, n_images=10, shape=shape)
    finally:
        shipped.min_padded_size = 256
    for name in CLICK_FLOOR:
        assert padded[0][name] >= unpadded[0][name] + 0.02, (name, padded, unpadded)
    assert padded[1] >= unpadded[1] + 0.02, (padded, unpadded)


def test_an_under_exposed_8bit_image_segments_as_well_as_a_normal_one(shipped):
    """A dim 8-bit image (no more than 0.01 % of its pixels reach 128) is brightened by a gain
    (engine/image.py).
    Held-out images 0-5 at a quarter of their exposure, measured: single click 0.752 / 0.837, as
    at full exposure (0.742 / 0.818), against 0.587 / 0.622 used as they are."""
    normal = click_ious(shipped, n_images=6)
    dim = click_ious(shipped, n_images=6, exposure=0.25)
    as_is = click_ious(shipped, n_images=6, exposure=0.25, normalize="none")
    for name in CLICK_FLOOR:
        assert dim[name] >= normal[name] - 0.03, (name, dim, normal)
        assert dim[name] >= as_is[name] + 0.1, (name, dim, as_is)


def test_scale_brings_larger_objects_to_the_size_the_model_knows(shipped):
    """Objects twice the size of the training objects (held-out images 0-3 upsampled 2x): a click
    at the image's own size, against the engine's ``scale=0.5``. Measured: 0.648 / 0.485 native,
    0.724 / 0.817 at half size (images 9000-9009: 0.705 / 0.459 and 0.811 / 0.796)."""
    from scipy import ndimage

    native, halved = make_segmenter(shipped), make_segmenter(shipped, scale=0.5)
    ious = {"native": {"nucleus": [], "cell": []}, "halved": {"nucleus": [], "cell": []}}
    for i in range(4):
        s = make_image((256, 256), seed=EVAL_SEED + i)
        large = np.clip(ndimage.zoom(s.image.astype(np.float32), 2.0, order=1), 0, 255).astype(np.uint8)
        for name, seg in (("native", native), ("halved", halved)):
            seg.set_image(large)
            for obj, full, _ in _targets(s, min_area=60):
                point = np.add(np.multiply(object_centre(s.instances, obj["id"]), 2), 0.5)
                mask = seg.predict(ObjectPrompt(points=[point])).masks[0]
                ious[name][obj["class"]].append(iou(mask, np.kron(full, np.ones((2, 2), bool))))
    native_iou = {k: float(np.mean(v)) for k, v in ious["native"].items()}
    halved_iou = {k: float(np.mean(v)) for k, v in ious["halved"].items()}
    for name, floor in CLICK_FLOOR.items():
        assert halved_iou[name] >= floor, (name, halved_iou)
    assert halved_iou["nucleus"] >= native_iou["nucleus"] + 0.05, (halved_iou, native_iou)
    assert halved_iou["cell"] >= native_iou["cell"] + 0.2, (halved_iou, native_iou)


def test_the_zstack_diagnostic_clicks_every_object_of_the_middle_slice_and_propagates_the_largest(shipped):
    """``evaluate_zstacks``: not an acceptance target (the model never saw z-slices, see its card),
    but its protocol is checked here against a direct computation on one stack."""
    from napari_seem.synthetic import make_sequence
    from napari_seem.train.evaluate import evaluate_zstacks

    report = evaluate_zstacks(shipped, n_stacks=1, seed=11000, n_slices=12)
    stack = make_sequence(12, (256, 256), seed=11000, axis="z")
    seg = make_segmenter(shipped)
    seg.set_image(stack.image[6])
    for name, maps in (("nucleus", stack.nuclei), ("cell", stack.cells)):
        ids, areas = np.unique(maps[6][maps[6] > 0], return_counts=True)
        ious = [iou(seg.predict(ObjectPrompt(points=[object_centre(stack.instances[6], k)])).masks[0], maps[6] == k)
                for k, a in zip(ids.tolist(), areas.tolist()) if a >= 60]
        assert report.click_iou[name] == pytest.approx(np.mean(ious)), name
        assert 0.0 <= report.propagation_iou[name] <= 1.0 and report.identity_kept[name][1] == 1
    assert report.click_iou["nucleus"] >= 0.4 and report.click_iou["cell"] >= 0.4  # measured 0.61 / 0.64


def test_an_example_object_finds_its_kind_on_another_image(shipped):
    """Referring-image search compares what the model names the example with what it names each
    object (``similarity="class"``): a nucleus finds the nuclei of another image about as text
    search does, and nothing but nuclei; the example's raw embedding is no guide for this model."""
    nuclei, names = referring_iou(shipped, "nucleus")
    assert nuclei >= 0.4, f"nuclei found from an example nucleus: IoU {nuclei:.3f}"  # measured 0.56 (text 'nucleus' on the same two images: 0.66)
    assert names and set(names) == {"nucleus"}
    cells, names = referring_iou(shipped, "cell")
    assert cells >= 0.45, f"cells found from an example cell: IoU {cells:.3f}"  # measured 0.67
    assert names and set(names) == {"cell"}
    by_embedding, _ = referring_iou(shipped, "nucleus", similarity="embedding")  # measured 0.08
    assert nuclei >= by_embedding + 0.3


def test_text_search_for_cells_gives_each_nucleus_its_own_cell(shipped):
    """Text search "cell": a found cell that covers two or more nuclei is that many cells, split
    where the mask's confidence dips between them (``cells_hold_one_nucleus``, the default)."""
    def cell_iou(**options):
        seg = make_segmenter(shipped, **options)
        ious = []
        for i in range(4):
            s = make_image((256, 256), seed=EVAL_SEED + i)
            seg.set_image(s.image)
            found = seg.predict(text="cell")
            assert set(found.class_names) == {"cell"}
            assert all(found.memory_of(k) is not None for k in range(len(found)))  # each piece can be corrected
            ious.extend(matched_ious(found, _truth(s, "cell")).tolist())
        return float(np.mean(ious))

    split, whole = cell_iou(), cell_iou(cells_hold_one_nucleus=False)
    assert split >= 0.55, f"text 'cell' IoU {split:.3f}"  # measured 0.70 (0.55 without the cell rules) on 29 cells
    assert split >= whole + 0.04


def test_text_search_clicks_each_found_cell_in_its_cytoplasm(shipped):
    """A found cell is outlined again from a click where it lies farthest from its nuclei, and
    cut between its own nucleus and its neighbours' (engine/refine.py): a click at its centre
    would land on its nucleus and select that. Held-out images 0-3 (29 cells), measured 0.612 ->
    0.699; referring-image search from a cell gets the same step."""
    def cell_iou(cytoplasm_click: bool) -> float:
        seg = make_segmenter(shipped)
        if not cytoplasm_click:
            seg._cells_hold_nuclei = lambda: False  # refine.py's cell step off, the split kept
        ious = []
        for i in range(4):
            s = make_image((256, 256), seed=EVAL_SEED + i)
            seg.set_image(s.image)
            ious.extend(matched_ious(seg.predict(text="cell"), _truth(s, "cell")).tolist())
        return float(np.mean(ious))

    on, off = cell_iou(True), cell_iou(False)
    assert on >= 0.62 and on >= off + 0.05, (on, off)


def test_the_text_cell_and_referring_diagnostics_are_what_the_engine_gives(shipped):
    report = evaluate(shipped, n_images=1, n_sequences=0, noc_per_class=0)
    seg = make_segmenter(shipped)
    s, following = make_image((256, 256), seed=EVAL_SEED), make_image((256, 256), seed=EVAL_SEED + 1)
    seg.set_image(s.image)
    assert report.text_cell_iou == pytest.approx(float(np.mean(matched_ious(seg.predict(text="cell"), _truth(s, "cell")))))
    for class_name in ("nucleus", "cell"):
        example = max((o["id"] for o in s.objects if o["class"] == class_name), key=lambda k: (s.instances == k).sum())
        found = seg.find_similar(s.image, s.instances == example, following.image)
        direct = float(np.mean(matched_ious(found, _truth(following, class_name))))
        assert report.referring_iou[class_name] == pytest.approx(direct)
        assert direct > 0.3, f"referring-image search from a {class_name}: {direct:.3f}"
