"""Propagation through z/t and referring-image search on the tiny model (mechanics, order, stopping)."""

import numpy as np
import pytest
from napari_seem.engine import ObjectPrompt, Segmentation
from napari_seem.engine.connected import deepest_pixel
from napari_seem.engine.propagate import frame_order, mask_iou
from napari_seem.synthetic import make_sequence
from refiner_stub import ClickDiscRefiner


@pytest.fixture(scope="module")
def movie():
    return make_sequence(n_frames=6, shape=(64, 80), seed=2).image


def _seeds(seg, frame):
    """Two seeds: the boxes as SEEM reads them (filled areas), without the engine's box rule,
    which would decode candidate clicks and clip to the box (engine/boxes.py; tested there)."""
    seg.set_image(frame)
    seg.fit_boxes = False
    return seg.predict([ObjectPrompt(boxes=[(10, 10, 40, 50)]), ObjectPrompt(boxes=[(30, 40, 60, 75)])])


def test_frame_order():
    assert frame_order(6, 2, "forward") == [[3, 4, 5]]
    assert frame_order(6, 2, "backward") == [[1, 0]]
    assert frame_order(6, 2, "both") == [[3, 4, 5], [1, 0]]
    assert frame_order(6, 2, "both", (1, 4)) == [[3, 4], [1]]
    with pytest.raises(ValueError, match="direction"):
        frame_order(6, 2, "sideways")
    with pytest.raises(ValueError, match="outside the stack"):
        frame_order(6, 9, "forward")
    with pytest.raises(ValueError, match="frame_range"):
        frame_order(6, 2, "forward", (3, 5))


@pytest.mark.parametrize("direction, expected", [("forward", [2, 3, 4, 5]), ("backward", [2, 1, 0]), ("both", [2, 3, 4, 5, 1, 0])])
def test_order_ids_and_memory(tiny_segmenter, movie, direction, expected):
    seeds = _seeds(tiny_segmenter, movie[2])
    seeds.object_ids = np.array([7, 9])
    visited, results = [], []
    for index, result in tiny_segmenter.propagate(movie, 2, seeds, direction=direction, stop_iou=0.0, min_score=0.0):
        visited.append(index)
        results.append(result)
        assert result.masks.shape[1:] == movie.shape[1:]
        assert set(result.object_ids) <= {7, 9}
    assert visited == expected
    assert results[0] is seeds


def test_each_frame_uses_previous_mask_as_memory(tiny_segmenter, movie, monkeypatch):
    seeds = _seeds(tiny_segmenter, movie[0])
    seen = []
    original = tiny_segmenter.predict

    def spy(prompts=None, **kw):
        seen.append((kw.get("previous"), [p.mask.copy() for p in prompts]))
        return original(prompts, **kw)

    monkeypatch.setattr(tiny_segmenter, "predict", spy)
    out = list(tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0))
    assert len(seen) == 5
    prev_result = out[0][1]
    for (previous, masks), (_, result) in zip(seen, out[1:]):
        assert previous is not None and np.array_equal(previous.memory, prev_result.memory)
        for m, pm in zip(masks, prev_result.masks):
            assert np.array_equal(m, pm)
        prev_result = result


def test_stop_rule_drops_vanished_objects(tiny_segmenter, movie):
    seeds = _seeds(tiny_segmenter, movie[0])
    out = list(tiny_segmenter.propagate(movie, 0, seeds, min_score=1.01))
    assert [i for i, _ in out] == [0, 1], "no object survives an impossible score: propagation stops"
    assert len(out[1][1]) == 0


def test_cancel_keeps_done_frames_and_reads_lazily(tiny_segmenter, movie, monkeypatch):
    seeds = _seeds(tiny_segmenter, movie[0])
    encoded = []
    original = tiny_segmenter.set_image
    monkeypatch.setattr(tiny_segmenter, "set_image", lambda img, **kw: encoded.append(1) or original(img, **kw))
    done = {}
    for index, result in tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0):
        done[index] = result
        if index == 2:
            break  # the user pressed Cancel
    assert sorted(done) == [0, 1, 2] and len(encoded) == 2


def test_restart_from_corrected_frame_only_touches_later_frames(tiny_segmenter, movie):
    seeds = _seeds(tiny_segmenter, movie[0])
    labels = np.zeros(movie.shape, np.int32)
    for index, result in tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0):
        labels[index] = result.to_labels()
    before = labels.copy()
    tiny_segmenter.set_image(movie[3])
    corrected = tiny_segmenter.predict(ObjectPrompt(points=[(20, 20)]))
    visited = []
    for index, result in tiny_segmenter.propagate(movie, 3, corrected, stop_iou=0.0, min_score=0.0):
        visited.append(index)
        labels[index] = result.to_labels()
    assert visited == [3, 4, 5]
    np.testing.assert_array_equal(labels[:3], before[:3])


def test_seed_checks(tiny_segmenter, movie):
    with pytest.raises(ValueError, match="no objects"):
        list(tiny_segmenter.propagate(movie, 0, Segmentation.empty(movie.shape[1:])))
    with pytest.raises(ValueError, match="seed masks have shape"):
        list(tiny_segmenter.propagate(movie, 0, Segmentation.empty((5, 5)).__class__(
            np.ones((1, 5, 5), bool), np.ones(1), ["x"], np.ones(1))))
    seeds = _seeds(tiny_segmenter, movie[0])
    for bad in ("far", -1):
        with pytest.raises(ValueError, match="max_step"):
            list(tiny_segmenter.propagate(movie, 0, seeds, max_step=bad))


def test_painted_seeds_without_memory(tiny_segmenter, movie):
    mask = np.zeros(movie.shape[1:], bool)
    mask[20:40, 20:50] = True
    seeds = Segmentation(mask[None], np.ones(1, np.float32), ["cell"], np.ones(1, np.float32))
    out = list(tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0, frame_range=(0, 2)))
    assert [i for i, _ in out] == [0, 1, 2]


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


def test_referring_image_search_by_embedding(tiny_segmenter, movie):
    ref_mask = np.zeros(movie.shape[1:], bool)
    ref_mask[20:40, 20:50] = True
    found = tiny_segmenter.find_similar(movie[0], ref_mask, movie[4], min_similarity=-1.0, max_objects=5,
                                        similarity="embedding")
    assert 1 <= len(found) <= 5
    assert found.masks.shape[1:] == movie.shape[1:]
    assert (found.masks.sum(0) >= 1).any()
    assert tiny_segmenter.image_shape == movie.shape[1:]
    only_direct = tiny_segmenter.find_similar(movie[0], ref_mask, min_similarity=1.01, similarity="embedding")
    assert len(only_direct) <= 1


def test_referring_image_search_by_class_is_automatic_mode_of_the_alike_queries(tiny_segmenter, movie, monkeypatch):
    """With every query alike (threshold -1), the class search is automatic mode (same objects);
    with none alike (threshold above 1), it finds nothing; scores are similarities, sorted."""
    ref_mask = np.zeros(movie.shape[1:], bool)
    ref_mask[20:40, 20:50] = True
    monkeypatch.setattr(tiny_segmenter.model, "object_mask_threshold", 0.0)  # random weights: keep every query
    monkeypatch.setattr(tiny_segmenter, "refine_text", False)
    tiny_segmenter.set_image(movie[4])
    everything = tiny_segmenter.segment_everything()
    assert len(everything) >= 2
    found = tiny_segmenter.find_similar(movie[0], ref_mask, movie[4], min_similarity=-1.0)
    assert tiny_segmenter.image_shape == movie.shape[1:]
    assert sorted(map(bytes, np.packbits(found.masks, axis=-1))) == sorted(map(bytes, np.packbits(everything.masks, axis=-1)))
    assert np.all(np.diff(found.scores) <= 0) and np.all((found.scores >= 0) & (found.scores <= 1))
    assert len(tiny_segmenter.find_similar(movie[0], ref_mask, min_similarity=1.01)) == 0
    top = tiny_segmenter.find_similar(movie[0], ref_mask, min_similarity=-1.0, max_objects=1)
    assert len(top) == 1 and top.scores[0] == found.scores[0]


@pytest.mark.parametrize("options, message", [
    ({"similarity": "pixels"}, "similarity must be one of"),
    ({"min_similarity": float("nan")}, "min_similarity must be a number"),
    ({"max_objects": 0}, "max_objects must be at least 1"),
])
def test_referring_image_search_refuses_bad_options(tiny_segmenter, movie, options, message):
    ref_mask = np.zeros(movie.shape[1:], bool)
    ref_mask[20:40, 20:50] = True
    with pytest.raises(ValueError, match=message):
        tiny_segmenter.find_similar(movie[0], ref_mask, movie[4], **options)


def _objects(masks):
    n = len(masks)
    return Segmentation(masks=masks, scores=np.ones(n, np.float32), class_names=["cell"] * n,
                        class_scores=np.ones(n, np.float32))


def _disk(shape, centre, radius):
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius ** 2


def test_limit_motion_cuts_off_a_leak_beyond_the_step_and_keeps_a_moved_object():
    from napari_seem.engine.propagate import limit_motion

    shape = (40, 60)
    old = _disk(shape, (20, 15), 8)
    moved = _disk(shape, (21, 17), 8)                 # moved by ~2 px: all within the step
    leak = _disk(shape, (20, 40), 7)                  # a touching neighbour the mask grew into
    bridge = np.zeros(shape, bool)
    bridge[18:23, 23:34] = True
    prob = np.where(moved, 0.9, np.where(leak | bridge, 0.7, 0.0))
    prob[:, 30] = np.where(bridge[:, 30], 0.55, prob[:, 30])
    result = _objects(np.stack([moved | leak | bridge, moved]))
    previous = _objects(np.stack([old, old]))
    limit_motion(result, previous, lambda k: prob, max_step="auto")   # 30 % of r=8: 2 px
    assert (result.masks[0] & moved).sum() == moved.sum()   # the moved object is whole
    assert not (result.masks[0] & leak).any()               # the neighbour is cut off at the dip
    assert np.array_equal(result.masks[1], moved)           # nothing beyond the step: untouched
    far_step = _objects(np.stack([moved | leak | bridge]))
    limit_motion(far_step, previous.select([0]), lambda k: prob, max_step=40)
    assert np.array_equal(far_step.masks[0], moved | leak | bridge)


def test_propagation_limits_motion_only_with_the_region_rules(tiny_segmenter, movie):
    from napari_seem.engine.propagate import limit_motion

    seeds = _seeds(tiny_segmenter, movie[0])
    off = [r for _, r in tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0, max_step=None)]
    on = [r for _, r in tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0, max_step=1)]
    r = off[1]
    expected = Segmentation(r.masks.copy(), r.scores, r.class_names, r.class_scores, r.memory, r.object_ids)
    limit_motion(expected, seeds, lambda k: tiny_segmenter.mask_probabilities(off[1], k), max_step=1)
    np.testing.assert_array_equal(on[1].masks, expected.masks)
    assert (on[1].masks <= off[1].masks).all() and not np.array_equal(on[1].masks, off[1].masks)
    tiny_segmenter.connected_objects = False
    try:
        raw = [[r for _, r in tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0, max_step=step)]
               for step in (None, 1)]
    finally:
        tiny_segmenter.connected_objects = True
    for a, b in zip(*raw):
        np.testing.assert_array_equal(a.masks, b.masks)


class _ClickSegmenter:
    """Stands in for a Segmenter in ``reanchor_nuclei``: every click gives ``mask`` named ``name``."""

    def __init__(self, mask, name="nucleus"):
        self.mask, self.name, self.clicks = mask, name, []

    def predict(self, prompts):
        self.clicks.extend(tuple(p.points[0]) for p in prompts)
        n = len(prompts)
        return Segmentation(masks=np.stack([self.mask] * n), scores=np.full(n, 0.9, np.float32),
                            class_names=[self.name] * n, class_scores=np.full(n, 0.8, np.float32),
                            memory=np.full((n, 10, 15), 3.0, np.float32))


def test_a_nucleus_that_leaked_into_its_cell_is_reanchored_from_a_click():
    from napari_seem.engine.propagate import reanchor_nuclei

    shape = (40, 60)
    nucleus = _disk(shape, (20, 20), 6)
    leaked = nucleus | _disk(shape, (20, 26), 9)         # crept into the cytoplasm: ~2.5x
    result = Segmentation(masks=np.stack([leaked, leaked]), scores=np.full(2, 0.5, np.float32),
                          class_names=["cell", "cell"], class_scores=np.full(2, 0.5, np.float32),
                          memory=np.zeros((2, 10, 15), np.float32), object_ids=np.array([4, 9]))
    started = {4: ("nucleus", float(nucleus.sum())), 9: ("cell", float(nucleus.sum()))}
    seg = _ClickSegmenter(nucleus)
    assert reanchor_nuclei(seg, result, started) == [0]   # only the object that started as a nucleus
    np.testing.assert_array_equal(result.masks[0], nucleus)
    assert result.scores[0] == np.float32(0.9) and result.class_scores[0] == np.float32(0.8)
    assert result.class_names == ["nucleus", "cell"]
    assert (result.memory[0] == 3.0).all() and (result.memory[1] == 0.0).all()   # its memory too
    np.testing.assert_array_equal(result.masks[1], leaked)
    assert len(seg.clicks) == 1 and leaked[tuple(int(v) for v in seg.clicks[0])]  # one click, inside the leaked mask

    def fresh():
        return Segmentation(masks=leaked[None].copy(), scores=np.ones(1, np.float32), class_names=["nucleus"],
                            class_scores=np.ones(1, np.float32), object_ids=np.array([4]))

    # not a leak, or not a trustworthy click: the propagated mask stays
    assert reanchor_nuclei(_ClickSegmenter(nucleus, "cell"), fresh(), started) == []       # the click finds a cell
    assert reanchor_nuclei(_ClickSegmenter(_disk(shape, (20, 20), 3)), fresh(), started) == []  # a fragment
    assert reanchor_nuclei(_ClickSegmenter(_disk(shape, (20, 50), 6)), fresh(), started) == []  # elsewhere
    grown = {4: ("nucleus", float(leaked.sum()))}
    assert reanchor_nuclei(_ClickSegmenter(leaked), fresh(), grown) == []   # no larger than the click's
    assert reanchor_nuclei(seg, fresh(), {}) == []                        # no seed class known


def test_hold_shrinking_keeps_the_previous_pixels_that_are_still_likely():
    from napari_seem.engine.propagate import hold_shrinking

    shape = (40, 60)
    old = _disk(shape, (20, 20), 8)
    shrunk = _disk(shape, (20, 20), 5)
    prob = np.where(_disk(shape, (20, 20), 7), 0.3, 0.05)      # a faded memory: likely to r = 7
    prob[shrunk] = 0.9
    grown = _disk(shape, (20, 20), 9)
    result = _objects(np.stack([shrunk, grown, np.zeros(shape, bool)]))
    previous = _objects(np.stack([old, old, old]))
    assert hold_shrinking(result, previous, lambda k: prob, level=0.1) == [0]
    np.testing.assert_array_equal(result.masks[0], _disk(shape, (20, 20), 7))   # back to r = 7, no further
    np.testing.assert_array_equal(result.masks[1], grown)                       # did not shrink: as it was
    assert not result.masks[2].any()                                            # gone stays gone
    result = _objects(shrunk[None].copy())
    assert hold_shrinking(result, previous.select([0]), lambda k: prob, level=0.5) == []
    np.testing.assert_array_equal(result.masks[0], shrunk)


def test_propagation_holds_only_when_asked(tiny_segmenter, movie):
    seeds = _seeds(tiny_segmenter, movie[0])
    off = [r.masks for _, r in tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0)]
    on = [r.masks for _, r in tiny_segmenter.propagate(movie, 0, seeds, stop_iou=0.0, min_score=0.0,
                                                       hold_probability=0.1)]
    # frame 1 (both from the same seeds): the hold only adds back seed pixels
    assert (on[1] >= off[1]).all() and (on[1] <= (off[1] | seeds.masks)).all()
    assert any(not np.array_equal(a, b) for a, b in zip(on, off))
    for bad in (0, 1, -0.1, "0.1"):
        with pytest.raises(ValueError, match="hold_probability"):
            list(tiny_segmenter.propagate(movie, 0, seeds, hold_probability=bad))


class _RefinerSegmenter:
    """Stands in for a Segmenter in ``redraw_outlines``."""

    def __init__(self, shape):
        self.refiners, self.shape = (ClickDiscRefiner(5),), shape

    def refiner_for(self, class_name):
        return next((r for r in self.refiners if class_name in r.classes), None)

    def mask_probabilities(self, result, k):
        return result.masks[k].astype(np.float32)

    def refiner_image(self):
        return np.zeros((3, *self.shape), np.float32)


def test_nuclei_are_redrawn_by_the_outline_refiner_from_a_click_at_their_deepest_pixel():
    from napari_seem.engine.propagate import redraw_outlines

    shape = (60, 80)
    drifted = _disk(shape, (30, 30), 6) | _disk(shape, (30, 35), 3)  # a nucleus mask gone slightly off
    masks = np.stack([drifted, drifted, drifted, np.zeros(shape, bool)])
    result = Segmentation(masks=masks.copy(), scores=np.full(4, 0.9, np.float32),
                          class_names=["nucleus", "nucleus", "cell", "nucleus"], class_scores=np.full(4, 0.8, np.float32),
                          memory=np.zeros((4, 15, 20), np.float32), object_ids=np.array([1, 2, 3, 4]))
    started = {1: ("nucleus", 100.0), 2: ("cell", 100.0), 3: ("nucleus", 100.0), 4: ("nucleus", 100.0)}
    # objects 1 and 3: they started as nuclei, whatever they are named now (2 started as a cell, 4 is gone)
    assert redraw_outlines(_RefinerSegmenter(shape), result, started) == [0, 2]
    for k in (0, 2):
        np.testing.assert_array_equal(result.masks[k], _disk(shape, deepest_pixel(drifted), 5))
    np.testing.assert_array_equal(result.masks[[1, 3]], masks[[1, 3]])
    assert result.class_names == ["nucleus", "nucleus", "cell", "nucleus"]  # names are the decoder's
    # a refiner of other classes draws no nuclei
    segmenter = _RefinerSegmenter(shape)
    segmenter.refiners[0].classes = ("cell",)
    result = Segmentation(masks=masks.copy(), scores=np.full(4, 0.9, np.float32),
                          class_names=["nucleus", "nucleus", "cell", "nucleus"], class_scores=np.full(4, 0.8, np.float32),
                          memory=np.zeros((4, 15, 20), np.float32), object_ids=np.array([1, 2, 3, 4]))
    assert redraw_outlines(segmenter, result, started) == []
    np.testing.assert_array_equal(result.masks, masks)
    # a redrawn outline (81 px) under LEAK_SEED_SHARE of the seed (here 200 px) is a fragment: not taken
    result = Segmentation(masks=drifted[None].copy(), scores=np.ones(1, np.float32), class_names=["nucleus"],
                          class_scores=np.ones(1, np.float32), memory=np.zeros((1, 15, 20), np.float32),
                          object_ids=np.array([1]))
    assert redraw_outlines(_RefinerSegmenter(shape), result, {1: ("nucleus", 200.0)}) == [0]
    np.testing.assert_array_equal(result.masks[0], drifted)


def test_cells_are_redrawn_by_their_own_refiner_where_it_agrees_with_the_propagated_mask():
    from napari_seem.engine.propagate import redraw_cells, redraw_outlines

    shape = (100, 120)
    crept = _disk(shape, (50, 50), 12) | _disk(shape, (50, 64), 5)  # a cell that crept a little over its neighbour
    apart = _disk(shape, (50, 50), 30)                              # a mask the refiner's outline overlaps little
    masks = np.stack([crept, crept, apart, np.zeros(shape, bool)])
    result = Segmentation(masks=masks.copy(), scores=np.full(4, 0.9, np.float32),
                          class_names=["cell", "nucleus", "cell", "cell"], class_scores=np.full(4, 0.8, np.float32),
                          memory=np.zeros((4, 25, 30), np.float32), object_ids=np.array([1, 2, 3, 4]))
    started = {1: ("cell", 500.0), 2: ("cell", 500.0), 3: ("cell", 500.0), 4: ("cell", 500.0)}
    segmenter = _RefinerSegmenter(shape)
    assert redraw_cells(segmenter, result, started) == []      # no refiner of cells: nothing drawn
    cells = ClickDiscRefiner(12)
    cells.classes, cells.window = ("cell",), 96
    segmenter.refiners = (segmenter.refiners[0], cells)
    assert redraw_outlines(segmenter, result, started) == []   # the nuclei's refiner draws no cells
    # objects 1 and 2 started as cells (2 is named nucleus now); 4 is gone
    assert redraw_cells(segmenter, result, started) == [0, 1, 2]
    disc = _disk(shape, deepest_pixel(crept), 12)
    for k in (0, 1):
        np.testing.assert_array_equal(result.masks[k], disc)
    np.testing.assert_array_equal(result.masks[2], apart)     # IoU about 0.16 < MIN_AGREEMENT: kept
    assert not result.masks[3].any()


def test_near_the_edge_a_redrawn_nucleus_is_compared_with_its_last_outline_not_the_seed():
    from napari_seem.engine.propagate import EDGE_MARGIN, EDGE_SHARE, redraw_outlines

    shape = (60, 80)

    def one(mask):
        return Segmentation(masks=mask[None].copy(), scores=np.ones(1, np.float32), class_names=["nucleus"],
                            class_scores=np.ones(1, np.float32), memory=np.zeros((1, 15, 20), np.float32),
                            object_ids=np.array([1]))

    seed = {1: ("nucleus", 200.0)}   # the refiner draws 81 px discs: under 75 % of the seed
    assert EDGE_SHARE == 0.5
    at_edge = _disk(shape, (8, 30), 7)
    centre = deepest_pixel(at_edge)
    assert centre[0] - 5 <= EDGE_MARGIN           # the redrawn disc reaches the edge margin
    for last in (150.0, 162.0):                   # the last outline drawn for it: 81 >= 0.5 * last
        result = one(at_edge)
        drawn = {1: last}
        redraw_outlines(_RefinerSegmenter(shape), result, seed, drawn)
        np.testing.assert_array_equal(result.masks[0], _disk(shape, centre, 5))
        assert drawn == {1: 81.0}
    for drawn in ({1: 163.0}, {}):              # ... a fragment of that, or nothing drawn yet: half the seed
        result = one(at_edge)
        redraw_outlines(_RefinerSegmenter(shape), result, seed, drawn)
        np.testing.assert_array_equal(result.masks[0], at_edge)
    inside = _disk(shape, (30, 40), 7)            # away from the edge: always the seed's bound
    result = one(inside)
    redraw_outlines(_RefinerSegmenter(shape), result, seed, {1: 100.0})
    np.testing.assert_array_equal(result.masks[0], inside)


def test_a_propagated_nucleus_that_leaked_is_cut_back_to_the_outline_drawn_inside_it():
    """The refiner keeps a mask when its outline overlaps it by less than MIN_AGREEMENT (IoU);
    for a propagated nucleus, an outline lying within the leaked mask is taken all the same."""
    from napari_seem.engine.outline_refiner import MIN_AGREEMENT
    from napari_seem.engine.propagate import INSIDE_SHARE, mask_iou, redraw_outlines

    shape = (60, 80)
    leaked = _disk(shape, (30, 30), 9) | _disk(shape, (30, 38), 7)  # a nucleus and the cell beside it
    result = Segmentation(masks=leaked[None].copy(), scores=np.ones(1, np.float32), class_names=["cell"],
                          class_scores=np.ones(1, np.float32), memory=np.zeros((1, 15, 20), np.float32),
                          object_ids=np.array([1]))
    drawn = _disk(shape, deepest_pixel(leaked), 5)          # what the refiner draws at the click
    assert (drawn & leaked).sum() >= INSIDE_SHARE * drawn.sum()
    assert mask_iou(drawn, leaked) < MIN_AGREEMENT
    assert redraw_outlines(_RefinerSegmenter(shape), result, {1: ("nucleus", 100.0)}) == [0]
    np.testing.assert_array_equal(result.masks[0], drawn)
    # an outline that leaves the mask (and overlaps it little) is another object: the mask stays
    bar = np.zeros(shape, bool)
    bar[29:32, 10:50] = True
    assert (_disk(shape, deepest_pixel(bar), 5) & bar).sum() < INSIDE_SHARE * 81
    result = Segmentation(masks=bar[None].copy(), scores=np.ones(1, np.float32), class_names=["nucleus"],
                          class_scores=np.ones(1, np.float32), memory=np.zeros((1, 15, 20), np.float32),
                          object_ids=np.array([1]))
    redraw_outlines(_RefinerSegmenter(shape), result, {1: ("nucleus", 40.0)})
    np.testing.assert_array_equal(result.masks[0], bar)


class _CytoplasmSegmenter:
    """Stands in for a Segmenter in ``keep_cells``: a mask prompt decodes to ``mask_result``, a
    click to ``click_result`` (a mask and a class name each); text search finds ``nuclei``."""

    def __init__(self, nuclei, mask_result, click_result):
        self.nuclei, self.results, self.prompts = nuclei, {"mask": mask_result, "click": click_result}, []

    def _state(self):
        from types import SimpleNamespace
        return SimpleNamespace(features=SimpleNamespace(padded_size=(40, 60)))

    def _nucleus_labels(self, state):
        return self.nuclei, np.bincount(self.nuclei.ravel())

    def predict(self, prompts, previous=None):
        self.prompts.extend(prompts)
        kind = "mask" if prompts[0].mask is not None else "click"
        mask, name = self.results[kind]
        n = len(prompts)
        return Segmentation(masks=np.stack([mask] * n), scores=np.full(n, 0.7, np.float32), class_names=[name] * n,
                            class_scores=np.full(n, 0.6, np.float32),
                            memory=np.full((n, 10, 15), 5.0 if kind == "mask" else 7.0, np.float32))


def test_a_cell_that_turned_into_its_nucleus_is_decoded_again_from_its_cytoplasm():
    from napari_seem.engine.propagate import keep_cells

    shape = (40, 60)
    cell, nucleus = _disk(shape, (20, 25), 12), _disk(shape, (20, 25), 5)
    nuclei = nucleus.astype(np.int32)

    def results(names):
        masks = np.stack([cell if name == "cell" else nucleus for name in names])
        return Segmentation(masks=masks, scores=np.full(len(names), 0.9, np.float32), class_names=list(names),
                            class_scores=np.full(len(names), 0.8, np.float32),
                            memory=np.zeros((len(names), 10, 15), np.float32), object_ids=np.arange(1, len(names) + 1))

    previous = results(["cell", "cell", "nucleus"])
    now = results(["nucleus", "cell", "nucleus"])  # object 0 came out as the nucleus inside the cell
    shifted = _disk(shape, (20, 26), 12)
    seg = _CytoplasmSegmenter(nuclei, (shifted, "cell"), (_disk(shape, (20, 40), 12), "cell"))
    assert keep_cells(seg, now, previous) == [0]
    np.testing.assert_array_equal(now.masks[0], shifted)  # the mask prompt's: it overlaps the previous mask most
    assert now.class_names == ["cell", "cell", "nucleus"] and now.scores[0] == np.float32(0.7)
    assert (now.memory[0] == 5.0).all() and (now.memory[1:] == 0.0).all()
    np.testing.assert_array_equal(seg.prompts[0].mask, cell & ~nucleus)  # the cytoplasm
    assert tuple(seg.prompts[1].points[0]) not in {tuple(p) for p in np.argwhere(nucleus)}  # clicked off the nucleus

    # the new decodes are no cells, or overlap the previous mask less: the mask stays the nucleus
    for mask_result in [(shifted, "nucleus"), (_disk(shape, (20, 45), 6), "cell")]:
        now = results(["nucleus"])
        assert keep_cells(_CytoplasmSegmenter(nuclei, mask_result, (nucleus, "vesicle")), now, results(["cell"])) == []
        np.testing.assert_array_equal(now.masks[0], nucleus)
    # a cell that is nearly all nucleus: no cytoplasm to decode from
    assert keep_cells(_CytoplasmSegmenter(nucleus.astype(np.int32) | cell, (cell, "cell"), (cell, "cell")),
                      results(["nucleus"]), results(["cell"])) == []
