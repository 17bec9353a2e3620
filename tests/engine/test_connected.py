"""One region per prompted object: the engine keeps the mask regions its prompt touches."""
import numpy as np
import pytest

from napari_seem.engine import ObjectPrompt, Segmenter, Vocabulary
from napari_seem.engine.connected import (
    cut_at_foreign_nuclei,
    cut_at_negatives,
    grow_at_marks,
    keep_prompted_regions,
    keep_prompted_regions_all,
    merge_duplicate_labels,
    merge_duplicates,
    split_between_nuclei,
    split_label_regions,
    split_regions,
    split_touching_cells,
)
from napari_seem.synthetic import make_image


def _blobs() -> np.ndarray:
    mask = np.zeros((40, 60), bool)
    mask[5:15, 5:15] = True      # region A
    mask[20:30, 40:55] = True    # region B
    mask[30:33, 2:5] = True      # region C (small)
    return mask


def _at(*cells) -> np.ndarray:
    prompt = np.zeros((40, 60), bool)
    for r, c in cells:
        prompt[r, c] = True
    return prompt


def test_keeps_only_the_clicked_region():
    mask = _blobs()
    kept = keep_prompted_regions(mask, _at((8, 8)))
    expected = np.zeros_like(mask)
    expected[5:15, 5:15] = True
    assert np.array_equal(kept, expected)


def test_keeps_every_region_the_prompt_touches():
    mask = _blobs()
    kept = keep_prompted_regions(mask, _at((8, 8), (25, 45)))
    assert np.array_equal(kept, mask & ~_region_c())


def _region_c() -> np.ndarray:
    c = np.zeros((40, 60), bool)
    c[30:33, 2:5] = True
    return c


def test_a_click_beside_the_mask_keeps_the_nearest_region():
    mask = _blobs()
    kept = keep_prompted_regions(mask, _at((34, 8)))  # below region C, far from A and B
    assert np.array_equal(kept, _region_c())


def test_diagonal_neighbours_are_one_region():
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = mask[3, 3] = mask[4, 4] = True
    assert np.array_equal(keep_prompted_regions(mask, _at((2, 2))[:10, :10]), mask)


@pytest.mark.parametrize("case", ["empty mask", "empty prompt", "single region"])
def test_nothing_to_choose_returns_the_mask(case):
    mask = np.zeros((40, 60), bool) if case == "empty mask" else _blobs()
    if case == "single region":
        mask = _region_c()
    prompt = np.zeros((40, 60), bool) if case == "empty prompt" else _at((1, 1))
    assert np.array_equal(keep_prompted_regions(mask, prompt), mask)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="must both be 2D"):
        keep_prompted_regions(np.zeros((4, 4), bool), np.zeros((1, 4, 4), bool))
    with pytest.raises(ValueError, match="2 masks but 1 prompts"):
        keep_prompted_regions_all(np.zeros((2, 4, 4), bool), np.zeros((1, 4, 4), bool))
    assert keep_prompted_regions_all(np.zeros((0, 4, 4), bool), np.zeros((0, 4, 4), bool)).shape == (0, 4, 4)


def test_a_prompt_at_model_resolution_selects_in_the_full_resolution_mask():
    """The engine passes the prompt masks SEEM read (model resolution, e.g. half the image)."""
    mask = np.kron(_blobs(), np.ones((2, 2), bool))       # [80, 120]: the mask at the image's resolution
    coarse = _at((8, 8))                                  # [40, 60]: a click on region A
    expected = np.kron(np.array(keep_prompted_regions(_blobs(), coarse)), np.ones((2, 2), bool))
    assert np.array_equal(keep_prompted_regions(mask, coarse), expected)
    beside = keep_prompted_regions(mask, _at((34, 8)))    # beside region C: the nearest region
    assert np.array_equal(beside, np.kron(_region_c(), np.ones((2, 2), bool)))
    specks = np.zeros((80, 120), bool)
    specks[0, 0] = specks[0, 3] = True                    # finer than the prompt's grid: kept as they are
    assert np.array_equal(keep_prompted_regions(specks, _at((20, 30))), specks)


def test_segmenter_keeps_the_prompted_regions_of_the_raw_mask(tiny_model):
    """On random golden weights the raw masks are scattered: the kept mask is the part of the
    raw mask that the prompt touches, the score is recomputed on it, the memory stays raw."""
    image = make_image((96, 120), seed=3).image
    raw_seg = Segmenter(tiny_model, device="cpu", short_side=None, connected_objects=False)
    # the box as a filled area prompt (SEEM's reading), not decoded from clicks (engine/boxes.py)
    kept_seg = Segmenter(tiny_model, device="cpu", short_side=None, fit_boxes=False)
    assert kept_seg.connected_objects
    prompts = [ObjectPrompt(points=[(48, 60)]), ObjectPrompt(boxes=[(10, 10, 30, 40)])]
    raw_seg.set_image(image)
    kept_seg.set_image(image)
    raw, kept = raw_seg.predict(prompts), kept_seg.predict(prompts)
    regions = [np.zeros(image.shape, bool), np.zeros(image.shape, bool)]
    regions[0][47:50, 59:62] = True
    regions[1][10:31, 10:41] = True
    # the box: the regions of the raw mask it touches
    assert np.array_equal(kept.masks[1], keep_prompted_regions(raw.masks[1], regions[1]))
    assert (kept.masks[1] <= raw.masks[1]).all()
    # the click: the regions it touches, grown at the click where the click fell outside them
    touched = keep_prompted_regions(raw.masks[0], regions[0])
    expected = grow_at_marks(touched, raw_seg.mask_probabilities(raw, 0), regions[0])
    assert np.array_equal(kept.masks[0], expected)
    assert kept.masks[0][48, 60]  # the clicked pixel is in its object
    np.testing.assert_array_equal(kept.memory, raw.memory)
    # the raw click mask of this random model has several regions, so the rule did change it
    assert kept.masks[0].sum() < raw.masks[0].sum()


def test_split_regions_gives_one_mask_per_region_of_splittable_masks():
    blobs = _blobs()
    whole = np.zeros_like(blobs)
    whole[0:2, 30:40] = True
    whole[36:40, 30:40] = True  # two regions, but not splittable (a "stuff" class)
    masks, source = split_regions(np.stack([blobs, whole]), np.array([True, False]))
    assert source.tolist() == [0, 0, 0, 1]
    assert np.array_equal(masks[3], whole)
    assert np.array_equal(masks[:3].sum(0), blobs) and all(_n_regions(m) == 1 for m in masks[:3])


def test_split_regions_drops_crumbs():
    mask = np.zeros((40, 60), bool)
    mask[0:20, 0:20] = True       # 400 px
    mask[30, 50] = True           # 1 px crumb: < 5 % of the largest region
    masks, source = split_regions(mask[None], np.array([True]))
    assert len(masks) == 1 and masks[0].sum() == 400 and source.tolist() == [0]
    assert split_regions(np.zeros((0, 4, 4), bool), np.zeros(0, bool))[0].shape == (0, 4, 4)


def _n_regions(mask: np.ndarray) -> int:
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3, 3), bool))[1]


def test_segment_everything_gives_one_region_per_thing_object(tiny_model):
    image = make_image((96, 120), seed=3).image
    raw_seg = Segmenter(tiny_model, device="cpu", short_side=None, connected_objects=False)
    seg = Segmenter(tiny_model, device="cpu", short_side=None)
    raw_seg.set_image(image)
    seg.set_image(image)
    vocabulary = Vocabulary(["nucleus", "cell", "sky"], things=[0, 1])
    raw = raw_seg.segment_everything(vocabulary=vocabulary, score_threshold=0.0, overlap_threshold=0.0)
    split = seg.segment_everything(vocabulary=vocabulary, score_threshold=0.0, overlap_threshold=0.0)
    things = {"nucleus", "cell"}
    assert len(split) >= len(raw) > 0
    assert (split.masks.any(0) <= raw.masks.any(0)).all()
    for k in range(len(split)):
        if split.class_names[k] in things:
            assert _n_regions(split.masks[k]) == 1
    assert split.memory.shape[0] == len(split) and list(split.object_ids) == list(range(1, len(split) + 1))
    assert split.compact and raw.compact  # non-overlapping objects: one label image
    assert len(split) > len(raw)  # this random model's segments are scattered: they were split


def _two_halves() -> tuple[np.ndarray, np.ndarray]:
    """Two touching segments (the halves of one square) and two query masks covering the square."""
    masks = np.zeros((2, 30, 30), bool)
    masks[0, 5:20, 5:12] = True
    masks[1, 5:20, 12:20] = True
    queries = np.zeros((2, 30, 30), bool)
    queries[:, 5:20, 5:20] = True
    return masks, queries


def test_touching_segments_of_duplicate_queries_merge():
    masks, queries = _two_halves()
    things = np.array([True, True])
    assert merge_duplicates(masks, queries, np.array([0, 0]), things) == [[0, 1]]
    # another class, a stuff class, or query masks that describe different objects: kept apart
    assert merge_duplicates(masks, queries, np.array([0, 1]), things) == [[0], [1]]
    assert merge_duplicates(masks, queries, np.array([0, 0]), np.array([True, False])) == [[0], [1]]
    assert merge_duplicates(masks, masks, np.array([0, 0]), things) == [[0], [1]]
    # not touching: two objects, however alike their queries
    apart = masks.copy()
    apart[1] = np.roll(masks[1], 3, axis=1)
    assert merge_duplicates(apart, queries, np.array([0, 0]), things) == [[0], [1]]
    # the threshold is on the IoU of the query masks (here 15x7 / 15x15 = 0.47)
    half = queries.copy()
    half[1, :, 12:] = False
    assert merge_duplicates(masks, half, np.array([0, 0]), things) == [[0], [1]]
    assert merge_duplicates(masks, half, np.array([0, 0]), things, iou_threshold=0.4) == [[0, 1]]


def test_merging_is_transitive_and_keeps_order():
    masks = np.zeros((4, 10, 40), bool)
    for k, (a, b) in enumerate([(0, 10), (30, 40), (10, 20), (20, 30)]):
        masks[k, :, a:b] = True
    queries = np.ones((4, 5, 20), bool)
    queries[1] = False
    queries[1, :, 15:] = True  # segment 1's query describes another object
    assert merge_duplicates(masks, queries, np.zeros(4, int), np.ones(4, bool)) == [[0, 2, 3], [1]]


def test_split_regions_drops_pieces_below_the_minimum_area():
    mask = np.zeros((40, 60), bool)
    mask[0:20, 0:20] = True       # 400 px
    mask[30:34, 50:54] = True     # 16 px: 4 % ... dropped by the fraction rule anyway
    mask[30:35, 30:35] = True     # 25 px (6 %): kept by the fraction rule
    assert len(split_regions(mask[None], np.array([True]))[0]) == 2
    masks, _ = split_regions(mask[None], np.array([True]), min_area=30)
    assert len(masks) == 1 and masks[0].sum() == 400
    whole = split_regions(mask[None], np.array([False]), min_area=1000)[0]
    assert np.array_equal(whole[0], mask)  # masks that are not split keep every piece


def _dumbbell() -> tuple[np.ndarray, np.ndarray]:
    """Two squares joined by a bridge; the confidence dips at the bridge's column 27."""
    mask = np.zeros((30, 50), bool)
    mask[5:25, 5:20] = True
    mask[12:16, 20:30] = True
    mask[5:25, 30:45] = True
    prob = np.where(mask, 0.9, 0.0)
    prob[:, 27] = np.where(mask[:, 27], 0.55, 0.0)
    return mask, prob


def test_a_negative_click_cuts_off_its_part_of_the_mask_where_confidence_dips():
    mask, prob = _dumbbell()
    pos, neg = np.zeros_like(mask), np.zeros_like(mask)
    pos[14, 10] = True
    neg[14, 38] = True
    cut = cut_at_negatives(mask, prob, pos, neg)
    assert cut[5:25, 5:20].all() and not cut[:, 30:].any()     # the clicked square stays, the other goes
    assert cut[12:16, 20:27].all() and not cut[:, 28:].any()   # the cut follows the dip
    assert (cut <= mask).all()


def test_without_a_negative_inside_or_a_positive_inside_the_mask_is_kept():
    mask, prob = _dumbbell()
    pos, neg = np.zeros_like(mask), np.zeros_like(mask)
    pos[14, 10] = True
    neg[0, 0] = True                                            # negative outside the mask
    assert np.array_equal(cut_at_negatives(mask, prob, pos, neg), mask)
    neg[14, 38] = True
    assert np.array_equal(cut_at_negatives(mask, prob, np.zeros_like(mask), neg), mask)


def test_negative_cut_reads_prompts_at_a_coarser_resolution():
    mask, prob = _dumbbell()
    big_mask, big_prob = np.kron(mask, np.ones((2, 2), bool)), np.kron(prob, np.ones((2, 2)))
    pos, neg = np.zeros_like(mask), np.zeros_like(mask)
    pos[14, 10] = True
    neg[14, 38] = True
    cut = cut_at_negatives(big_mask, big_prob, pos, neg)         # prompts at half the mask's resolution
    assert cut[10:50, 10:40].all() and not cut[:, 56:].any()     # cut in the dip (columns 54-55)
    assert (cut <= big_mask).all()


def test_segmenter_cuts_at_negative_clicks_and_raw_mode_does_not(tiny_model):
    """Golden random weights (their raw mask hugs the top rows): negative clicks inside the kept
    mask of a box remove the part they fall in; the result is the rule applied to the raw mask and
    its confidence; raw mode keeps SEEM's mask, negative pixels included."""
    import torch

    from napari_seem.engine.image import logits_to_original

    image = make_image((96, 120), seed=3).image
    raw_seg = Segmenter(tiny_model, device="cpu", short_side=None, connected_objects=False)
    kept_seg = Segmenter(tiny_model, device="cpu", short_side=None, fit_boxes=False)  # the box as an area
    raw_seg.set_image(image)
    kept_seg.set_image(image)
    box = (0, 0, 6, 50)
    positive = np.zeros(image.shape, bool)
    positive[0:7, 0:51] = True
    for point in [(1, 61), (1, 85), (2, 95)]:
        prompt = ObjectPrompt(boxes=[box], points=[point], point_labels=[0])
        raw, kept = raw_seg.predict(prompt), kept_seg.predict(prompt)
        negative = np.zeros(image.shape, bool)
        negative[point[0] - 1:point[0] + 2, point[1] - 1:point[1] + 2] = True
        logits = kept_seg._to_model_grid(kept_seg._state(), torch.from_numpy(raw.memory))
        prob = logits_to_original(logits, image.shape).sigmoid().numpy()[0]
        connected = keep_prompted_regions(raw.masks[0], positive)
        assert (connected & negative).any() and (connected & positive).any()
        assert np.array_equal(kept.masks[0], cut_at_negatives(connected, prob, positive, negative))
        assert not (kept.masks[0] & negative).any() and (raw.masks[0] & negative).any()
        assert kept.masks[0].sum() < connected.sum()
        assert kept.masks[0][0:7, 0:51].any()


def _rim_scene():
    """A disc mask (prob 0.9) with a thin rim just outside it that the model half believes (0.4),
    and background (0.05)."""
    rows, cols = np.ogrid[:60, :60]
    r = np.sqrt((rows - 30.0) ** 2 + (cols - 30.0) ** 2)
    prob = np.where(r <= 10, 0.9, np.where(r <= 12, 0.4, 0.05)).astype(np.float32)
    return prob > 0.5, prob, r


def test_grow_at_marks_adds_the_clicked_rim_near_the_click_only():
    mask, prob, r = _rim_scene()
    click = np.zeros_like(mask)
    click[29:32, 40:43] = True                        # on the rim, right of the disc (r 10-13)
    grown = grow_at_marks(mask, prob, click)
    assert (grown >= mask).all() and grown[29:32, 40:43].all()
    added = grown & ~mask
    rim = (r > 10) & (r <= 12)
    assert added[rim].sum() > 9                       # more than the click: the rim around it
    assert not added[:, :34].any()                    # ... but only near the click, not the whole rim
    assert not (added & (prob < 0.4) & ~click).any()  # nothing less likely than the clicked pixels
    inside = np.zeros_like(mask)
    inside[29:32, 29:32] = True
    assert np.array_equal(grow_at_marks(mask, prob, inside), mask)  # a click inside: unchanged
    blocked = np.zeros_like(mask)
    blocked[26:29, 40:42] = True                      # a negative click next to it is respected
    assert not grow_at_marks(mask, prob, click, negative=blocked)[blocked].any()


def test_grow_at_marks_reads_marks_at_a_coarser_resolution():
    mask, prob, _ = _rim_scene()
    coarse = np.zeros((30, 30), bool)
    coarse[15, 20] = True                             # pixel (30..31, 40..41) at full resolution
    grown = grow_at_marks(mask, prob, coarse)
    assert grown[30:32, 40:42].all() and not grown[:, :34][~mask[:, :34]].any()


def test_positive_marks_keep_only_positive_clicks_and_strokes():
    prompt = ObjectPrompt(points=[(1, 2), (3, 4)], point_labels=[1, 0], boxes=[(0, 0, 5, 5)],
                          strokes=[np.array([[0, 0], [2, 2]]), np.array([[4, 4], [5, 5]])], stroke_labels=[1, 0])
    marks = prompt.positive_marks()
    assert marks.points.tolist() == [[1, 2]] and len(marks.strokes) == 1 and not len(marks.boxes)
    assert ObjectPrompt(boxes=[(0, 0, 5, 5)]).positive_marks() is None
    assert ObjectPrompt(points=[(1, 1)], point_labels=[0], mask=np.ones((4, 4), bool)).positive_marks() is None


def test_a_positive_click_outside_the_mask_joins_its_object(tiny_model):
    """Whatever the (random golden) model does with it, a positive click ends up in its object's mask."""
    image = make_image((96, 120), seed=5).image
    seg = Segmenter(tiny_model, device="cpu", short_side=None)
    seg.set_image(image)
    clicks = [(20, 20), (70, 90), (50, 30)]
    result = seg.predict([ObjectPrompt(points=[c]) for c in clicks])
    for k, (row, col) in enumerate(clicks):
        assert result.masks[k][row, col]


def test_distance_to_mask_in_windows_equals_the_whole_image_distance():
    from scipy import ndimage

    from napari_seem.engine.connected import _distance_to_mask

    rng = np.random.default_rng(0)
    for trial in range(20):
        mask = np.zeros((120, 150), bool)
        for _ in range(rng.integers(1, 4)):           # a few small blobs, possibly far from the seed
            r, c = rng.integers(0, 120), rng.integers(0, 150)
            mask[max(0, r - 2):r + 3, max(0, c - 2):c + 3] = True
        seeds = np.zeros_like(mask)
        r, c = rng.integers(0, 118), rng.integers(0, 148)
        seeds[r:r + 3, c:c + 3] = True
        seeds &= ~mask
        if not seeds.any():
            continue
        pieces, n = ndimage.label(seeds, structure=np.ones((3, 3), bool))
        whole = ndimage.distance_transform_edt(~mask)
        for k, box in enumerate(ndimage.find_objects(pieces), start=1):
            assert _distance_to_mask(mask, pieces, k, box) == pytest.approx(whole[pieces == k].min())
    assert _distance_to_mask(np.zeros((5, 5), bool), np.ones((5, 5), np.int32), 1, (slice(0, 5), slice(0, 5))) == 0.0


def _reference_split(masks, splittable, min_fraction=0.05, min_area=0.0):
    """Each mask labelled over the whole image on its own (what the bounding-box version must equal)."""
    from scipy import ndimage

    pieces, source = [], []
    for k, mask in enumerate(masks):
        if not mask.any():
            continue
        labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        if not splittable[k] or n <= 1:
            pieces.append(mask)
            source.append(k)
            continue
        areas = np.bincount(labels.ravel())[1:]
        for region in np.flatnonzero((areas >= min_fraction * areas.max()) & (areas >= min_area)):
            pieces.append(labels == region + 1)
            source.append(k)
    return pieces, source


@pytest.mark.parametrize("seed", range(4))
def test_label_image_split_equals_splitting_each_mask_over_the_whole_image(seed):
    rng = np.random.default_rng(seed)
    segments = rng.integers(0, 7, size=(60, 70)).astype(np.int32)  # scattered: many regions per segment
    segments[rng.random((60, 70)) < 0.5] = 0
    segments[10:30, 20:50] = 2  # one large region, so small pieces become crumbs
    splittable = np.array([True, True, False, True, True, False, True, True])  # segment 7 (index 7) is empty
    for min_area in (0.0, 3.0):
        positions, source = split_label_regions(segments, splittable, min_area=min_area)
        masks = np.stack([segments == k + 1 for k in range(len(splittable))])
        expected, expected_source = _reference_split(masks, splittable, min_area=min_area)
        assert source.tolist() == expected_source
        assert positions.max() == len(expected)
        for i, piece in enumerate(expected):
            np.testing.assert_array_equal(positions == i + 1, piece)
        dense, dense_source = split_regions(masks, splittable, min_area=min_area)
        np.testing.assert_array_equal(dense, np.stack(expected))
        assert dense_source.tolist() == expected_source


def test_merge_on_a_label_image_equals_the_mask_stack():
    masks, queries = _two_halves()
    positions = np.zeros(masks.shape[1:], np.int32)
    for k, m in enumerate(masks):
        positions[m] = k + 1
    things = np.array([True, True])
    assert merge_duplicate_labels(positions, queries, np.array([0, 0]), things) == [[0, 1]]
    positions[positions == 2] = 0  # a segment without a pixel touches nothing
    assert merge_duplicate_labels(positions, queries, np.array([0, 0]), things) == [[0], [1]]
    assert merge_duplicate_labels(np.zeros((4, 4), np.int32), np.zeros((0, 2, 2), bool), np.zeros(0), np.zeros(0)) == []


def _two_cells():
    """One mask over two touching cells (columns 0-29 and 30-59), a confidence dip between them,
    and a nucleus in each."""
    mask = np.zeros((40, 60), bool)
    mask[5:35, 2:58] = True
    prob = np.full((40, 60), 0.9)
    prob[:, 28:32] = 0.55  # the border between the two cells
    nuclei = np.zeros((40, 60), np.int32)
    nuclei[15:25, 10:20] = 1
    nuclei[15:25, 40:50] = 2
    return mask, prob, nuclei


def test_a_cell_mask_is_cut_between_its_nucleus_and_its_neighbours():
    mask, prob, nuclei = _two_cells()
    cut = cut_at_foreign_nuclei(mask, prob, _at((20, 15)), nuclei)  # click on nucleus 1
    assert cut[:, :28].sum() == mask[:, :28].sum() and not cut[:, 32:].any()
    beside = cut_at_foreign_nuclei(mask, prob, _at((8, 12)), nuclei)  # click on the cytoplasm: nearest nucleus
    np.testing.assert_array_equal(beside, cut)
    other = cut_at_foreign_nuclei(mask, prob, _at((30, 52)), nuclei)  # nearer nucleus 2: that cell is kept
    assert not other[:, :28].any() and other[:, 32:].sum() == mask[:, 32:].sum()


def test_a_cell_keeps_what_its_clicks_mark_and_what_is_not_a_nucleus_of_its_own():
    mask, prob, nuclei = _two_cells()
    both = _at((20, 15), (20, 45))  # a positive click on each nucleus: a cell with two nuclei
    np.testing.assert_array_equal(cut_at_foreign_nuclei(mask, prob, both, nuclei), mask)
    one = nuclei.copy()
    one[one == 2] = 0
    np.testing.assert_array_equal(cut_at_foreign_nuclei(mask, prob, _at((20, 15)), one), mask)
    outside = nuclei.copy()
    outside[outside == 2] = 0
    outside[32:40, 40:50] = 2  # mostly below the mask (30 of its 80 px inside): not inside this cell
    assert ((outside == 2) & mask).sum() == 30
    np.testing.assert_array_equal(cut_at_foreign_nuclei(mask, prob, _at((20, 15)), outside), mask)
    empty = np.zeros_like(mask)
    assert not cut_at_foreign_nuclei(empty, prob, _at((20, 15)), nuclei).any()


def test_a_mask_over_two_nuclei_is_split_into_two_cells_where_its_confidence_dips():
    mask, prob, nuclei = _two_cells()
    areas = np.bincount(nuclei.ravel())
    pieces = split_between_nuclei(mask, prob, nuclei, areas)
    assert set(np.unique(pieces)) == {0, 1, 2}
    np.testing.assert_array_equal(pieces > 0, mask)  # every mask pixel in one piece, nothing outside
    assert (pieces[nuclei == 1] == 1).all() and (pieces[nuclei == 2] == 2).all()
    assert (pieces[mask[:, :] & (np.arange(60) < 28)[None]] == 1).all()
    assert (pieces[mask & (np.arange(60) >= 32)[None]] == 2).all()
    one = nuclei.copy()
    one[one == 2] = 0
    np.testing.assert_array_equal(split_between_nuclei(mask, prob, one, np.bincount(one.ravel())), mask.astype(np.int32))
    outside = nuclei.copy()
    outside[outside == 2] = 0
    outside[32:40, 40:50] = 2  # only 30 of its 80 px inside the mask: not a nucleus of this mask
    np.testing.assert_array_equal(split_between_nuclei(mask, prob, outside, np.bincount(outside.ravel())),
                                  mask.astype(np.int32))
    assert not split_between_nuclei(np.zeros_like(mask), prob, nuclei, areas).any()


def test_a_split_cell_keeps_its_diagonal_pixels():
    """Regions are 8-connected: a pixel joined to the mask only by a corner still gets a cell."""
    mask, prob, nuclei = _two_cells()
    mask[35, 58] = True  # touches the mask's corner (34, 57) diagonally
    pieces = split_between_nuclei(mask, prob, nuclei, np.bincount(nuclei.ravel()))
    np.testing.assert_array_equal(pieces > 0, mask)
    assert pieces[35, 58] == 2


def test_a_negative_click_cuts_a_convex_object_along_the_line_through_it():
    from napari_seem.engine.connected import cut_beyond_negative_clicks

    rows, cols = np.ogrid[:40, :40]
    disc = (rows - 20) ** 2 + (cols - 20) ** 2 <= 10 ** 2
    anchor = np.array([20.0, 20.0])
    cut = cut_beyond_negative_clicks(disc, anchor, np.array([[20.0, 28.0]]))
    assert cut[:, 28:].sum() == 0 and np.array_equal(cut[:, :28], disc[:, :28])   # the whole side, not a watershed basin
    diagonal = cut_beyond_negative_clicks(disc, anchor, np.array([[26.0, 26.0]]))
    projection = (np.arange(40)[:, None] - 20) + (np.arange(40)[None, :] - 20)
    assert not (diagonal & (projection / np.sqrt(2) >= np.hypot(6, 6) - 0.5)).any()
    assert diagonal.sum() < disc.sum() and (diagonal == (disc & (projection / np.sqrt(2) < np.hypot(6, 6) - 0.5))).all()
    # a positive click beyond the line keeps the cut from happening; a click on the anchor cuts nothing
    kept = cut_beyond_negative_clicks(disc, anchor, np.array([[20.0, 28.0]]), keep=np.array([[20.0, 20.0], [21.0, 29.0]]))
    assert np.array_equal(kept, disc)
    assert np.array_equal(cut_beyond_negative_clicks(disc, anchor, np.array([[20.2, 20.3]])), disc)
    empty = np.zeros_like(disc)
    assert not cut_beyond_negative_clicks(empty, anchor, np.array([[20.0, 28.0]])).any()


def test_only_objects_named_nucleus_are_cut_square_to_their_click(tiny_model, monkeypatch):
    """The rule runs for objects named ``nucleus`` with a negative click (and ``shape_priors``)."""
    import napari_seem.engine.segmenter as segmenter_module

    calls = []
    real = segmenter_module.cut_beyond_negative_clicks
    monkeypatch.setattr(segmenter_module, "cut_beyond_negative_clicks",
                        lambda mask, anchor, negatives, keep=None: calls.append((anchor, negatives, keep)) or real(mask, anchor, negatives, keep))
    image = make_image((96, 120), seed=3).image
    prompt = ObjectPrompt(points=[(48, 60), (10, 10), (50, 64)], point_labels=[1, 0, 1])
    for vocabulary, convex, expected in ((["nucleus"], True, 1), (["nucleus"], False, 0), (["cell"], True, 0)):
        # a cell is not cut at negative clicks (it is not convex)
        seg = Segmenter(tiny_model, device="cpu", short_side=None, vocabulary=vocabulary, text_cache_dir=None,
                        shape_priors=convex, cells_hold_one_nucleus=False)
        seg.set_image(image)
        calls.clear()
        seg.predict(prompt)
        assert len(calls) == expected, (vocabulary, convex)
        if expected:
            anchor, negatives, keep = calls[0]
            np.testing.assert_array_equal(anchor, [48, 60])                 # the first positive click
            np.testing.assert_array_equal(negatives, [[10, 10]])
            np.testing.assert_array_equal(keep, [[48, 60], [50, 64]])


def test_a_positive_click_grows_a_convex_object_on_its_side():
    from napari_seem.engine.connected import grow_toward_positive_clicks

    rows, cols = np.ogrid[:40, :40]
    inner = (rows - 20) ** 2 + (cols - 20) ** 2 <= 8 ** 2
    anchor = np.array([20.0, 20.0])
    click = np.array([[20.0, 30.0]])                          # 2 px outside the disc, to its right
    grown = grow_toward_positive_clicks(inner, inner, anchor, click)
    assert grown[20, 30] and (grown >= inner).all()
    distance = np.sqrt(np.maximum(0, (rows - 20.0) ** 2 + (cols - 20.0) ** 2)) - 8
    added = grown & ~inner
    assert added.any() and (cols[0][np.nonzero(added)[1]] >= 20).all()   # only on the click's side
    assert (np.nonzero(added)[1] <= 30).all()                             # not beyond the line through it
    assert (distance[added] <= 2.5 + 1e-9).all()                          # at most the click's gap away
    assert added[20, 29] and added[13, 27] and not added[20, 11]         # the whole right side's rim, not the left
    # a click inside the previous mask, on the anchor, or with no previous mask grows nothing
    assert np.array_equal(grow_toward_positive_clicks(inner, inner, anchor, np.array([[20.0, 25.0]])), inner)
    assert np.array_equal(grow_toward_positive_clicks(inner, inner, anchor, anchor[None]), inner)
    assert np.array_equal(grow_toward_positive_clicks(inner, np.zeros_like(inner), anchor, click), inner)
    # the gap is measured from the previous round's mask: far clicks grow farther (window widens)
    far = grow_toward_positive_clicks(inner, inner, anchor, np.array([[20.0, 39.0]]))
    assert far[20, 39] and far[20, 35]
    # a sector (a star-shaped object such as a cell): only within 30 degrees of the click's direction
    sector = grow_toward_positive_clicks(inner, inner, anchor, click, half_angle=30.0) & ~inner
    assert sector[20, 29] and not sector[13, 27] and (sector <= added).all()
    angles = np.degrees(np.arctan2(np.abs(np.nonzero(sector)[0] - 20.0), np.nonzero(sector)[1] - 20.0))
    assert (angles <= 30.0 + 1e-9).all()


def test_a_nucleus_grows_from_its_previous_mask_toward_new_positive_clicks(tiny_model, monkeypatch):
    """The growth on a positive click's side is measured from the previous result's mask (the
    round before), else from the mask before the growth at marks; the first click is the anchor."""
    import napari_seem.engine.segmenter as segmenter_module

    calls = []
    real = segmenter_module.grow_toward_positive_clicks
    monkeypatch.setattr(segmenter_module, "grow_toward_positive_clicks",
                        lambda mask, before, anchor, positives: calls.append((before.copy(), anchor, positives))
                        or real(mask, before, anchor, positives))
    seg = Segmenter(tiny_model, device="cpu", short_side=None, vocabulary=["nucleus"], text_cache_dir=None,
                    cells_hold_one_nucleus=False)
    seg.set_image(make_image((96, 120), seed=3).image)
    first = seg.predict(ObjectPrompt(points=[(48, 60)]))
    assert calls == []                                                  # one click: nothing to grow toward
    second = seg.predict(ObjectPrompt(points=[(48, 60), (30, 80)]), previous=first)
    before, anchor, positives = calls[-1]
    np.testing.assert_array_equal(before, first.masks[0])
    np.testing.assert_array_equal(anchor, [48, 60])
    np.testing.assert_array_equal(positives, [[30, 80]])
    assert second.masks[0][30, 80]
    seg.predict(ObjectPrompt(points=[(48, 60), (30, 80)]))               # no previous result
    assert len(calls) == 2 and calls[-1][0].shape == first.masks[0].shape   # this round's mask before growth


def test_a_cell_grows_toward_a_positive_click_in_a_sector(tiny_model, monkeypatch):
    import napari_seem.engine.segmenter as segmenter_module

    calls = []
    real = segmenter_module.grow_toward_positive_clicks
    monkeypatch.setattr(segmenter_module, "grow_toward_positive_clicks",
                        lambda mask, before, anchor, positives, half_angle=90.0:
                        calls.append(half_angle) or real(mask, before, anchor, positives, half_angle))
    for vocabulary, priors, expected in ((["cell"], True, [30.0]), (["nucleus"], True, [90.0]), (["cell"], False, [])):
        seg = Segmenter(tiny_model, device="cpu", short_side=None, vocabulary=vocabulary, text_cache_dir=None,
                        shape_priors=priors, cells_hold_one_nucleus=False)
        seg.set_image(make_image((96, 120), seed=3).image)
        calls.clear()
        seg.predict(ObjectPrompt(points=[(48, 60), (30, 80)]))
        assert calls == expected, (vocabulary, priors)


def _two_touching_cells(shape=(60, 80)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two discs (radius 14 at (30, 24), radius 10 at (30, 50)) that overlap in a narrow neck."""
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    big = (rows - 30) ** 2 + (cols - 24) ** 2 <= 14 ** 2
    small = (rows - 30) ** 2 + (cols - 50) ** 2 <= 10 ** 2
    neck = (abs(rows - 30) <= 2) & (cols >= 36) & (cols <= 42)
    return big | small | neck, big, small


def test_a_cell_mask_over_a_touching_neighbour_keeps_the_clicked_blob():
    mask, big, small = _two_touching_cells()
    no_prompt = np.zeros_like(mask)
    kept = split_touching_cells(mask, np.array([[30.0, 50.0]]), no_prompt, min_area=50)
    assert kept[30, 50] and not kept[30, 24] and (kept <= mask).all()
    assert (kept & small).sum() == small.sum() and (kept & big).sum() < 0.05 * big.sum()
    kept = split_touching_cells(mask, np.array([[25.0, 20.0]]), no_prompt, min_area=50)
    assert kept[30, 24] and not kept[30, 50] and (kept & big).sum() == big.sum()
    # clicks on both keep both; so does a neighbour smaller than min_area
    assert np.array_equal(split_touching_cells(mask, np.array([[30.0, 24.0], [30.0, 50.0]]), no_prompt, min_area=50), mask)
    assert np.array_equal(split_touching_cells(mask, np.array([[30.0, 24.0]]), no_prompt, min_area=400), mask)


def test_without_clicks_the_blobs_mostly_inside_the_prompt_stay():
    """A mask prompt (propagation: the previous frame's mask) keeps the blobs it mostly covers,
    read at the prompt's coarser resolution."""
    mask, big, small = _two_touching_cells()
    prompt = big[::4, ::4]                                      # the model's grid
    kept = split_touching_cells(mask, np.zeros((0, 2)), prompt, min_area=50)
    assert kept[30, 24] and not kept[30, 50]
    # a prompt covering neither blob by half keeps the one it overlaps most
    corner = np.zeros_like(mask)
    corner[28:33, 45:50] = True
    kept = split_touching_cells(mask, np.zeros((0, 2)), corner, min_area=50)
    assert kept[30, 50] and not kept[30, 24]
    # neither a click nor the prompt on the mask: nothing says which cell was meant
    outside = np.zeros_like(mask)
    outside[0:3, 0:3] = True
    assert np.array_equal(split_touching_cells(mask, np.array([[1.0, 1.0]]), outside, min_area=50), mask)


def test_a_mask_without_a_neck_or_cut_by_the_image_edge_stays_whole():
    rows, cols = np.ogrid[:60, :80]
    ellipse = ((rows - 30) / 12.0) ** 2 + ((cols - 40) / 25.0) ** 2 <= 1
    assert np.array_equal(split_touching_cells(ellipse, np.array([[30.0, 20.0]]), ellipse, min_area=50), ellipse)
    # a disc cut by the image's edge: the edge is not the cell's outline, the cell goes on beyond it
    # (with the edge as outline its depth would have two peaks, one in each lobe)
    lobes = (((rows - 30) ** 2 + (cols - 20) ** 2 <= 15 ** 2) | ((rows - 30) ** 2 + (cols - 44) ** 2 <= 15 ** 2))
    edge = lobes[22:, :]                                        # the image's top edge cuts both lobes
    assert np.array_equal(split_touching_cells(edge, np.array([[3.0, 20.0]]), np.zeros_like(edge), min_area=50), edge)
    # a separate piece of the mask (kept by an earlier rule) is left alone
    mask, big, small = _two_touching_cells()
    piece = np.zeros_like(mask)
    piece[2:6, 70:76] = True
    kept = split_touching_cells(mask | piece, np.array([[3.0, 72.0]]), np.zeros_like(mask), min_area=50)
    assert np.array_equal(kept, mask | piece)


def test_only_prompted_cells_with_shape_priors_are_split_at_a_neck(tiny_model, monkeypatch):
    import napari_seem.engine.segmenter as segmenter_module

    calls = []
    real = segmenter_module.split_touching_cells
    monkeypatch.setattr(segmenter_module, "split_touching_cells",
                        lambda mask, clicks, prompt, **kw: calls.append((clicks, prompt.shape, kw)) or real(mask, clicks, prompt, **kw))
    image = make_image((96, 120), seed=3).image
    for vocabulary, priors, expected in ((["cell"], True, 1), (["cell"], False, 0), (["nucleus"], True, 0)):
        seg = Segmenter(tiny_model, device="cpu", short_side=None, vocabulary=vocabulary, text_cache_dir=None,
                        shape_priors=priors, cells_hold_one_nucleus=False)
        seg.set_image(image)
        calls.clear()
        result = seg.predict(ObjectPrompt(points=[(48, 60), (10, 10)], point_labels=[1, 0]))
        assert result.masks[0].any()   # the rule only looks at non-empty masks
        assert len(calls) == expected, (vocabulary, priors)
        if expected:
            clicks, prompt_shape, kw = calls[0]
            np.testing.assert_array_equal(clicks, [[48, 60]])          # positive clicks only
            assert kw["min_area"] == pytest.approx(150.0) and kw["max_neck"] == 0.7   # model at the image's size
