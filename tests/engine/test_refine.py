"""Text search's objects decoded again from a click each (engine/refine.py)."""
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_seem.engine import ObjectPrompt, Segmentation, Segmenter
from napari_seem.engine.image import logits_to_original
from napari_seem.engine.refine import NUCLEUS_CLEARANCE, _inner_point, _window, _window_logits, refine_by_clicks
from napari_seem.synthetic import make_image
from refiner_stub import ClickDiscRefiner

SHAPE = (96, 120)


@pytest.fixture
def segmenter(tiny_model):
    seg = Segmenter(tiny_model, device="cpu", short_side=None, text_cache_dir=None)
    seg.set_image(make_image(SHAPE, seed=3).image)
    return seg


def _found() -> Segmentation:
    """Three non-overlapping objects, as text search returns them (label image, query memory)."""
    positions = np.zeros(SHAPE, np.int32)
    positions[10:20, 10:22] = 1
    positions[40:52, 60:70] = 2
    positions[20:30, 100:112] = 3
    memory = np.random.default_rng(0).normal(size=(3, 24, 32)).astype(np.float32)  # the padded grid: 96 x 128 / 4
    return Segmentation.from_labels(positions, scores=np.array([0.9, 0.8, 0.7], np.float32),
                                    class_names=["nucleus"] * 3, class_scores=np.full(3, 0.9, np.float32),
                                    memory=memory, memory_index=np.arange(3))


@contextmanager
def _swapped_predictor(model, fake):
    """The model's decoder replaced for a while (pytest's monkeypatch cannot restore a submodule)."""
    head = model.sem_seg_head
    real = head.predictor
    head.predictor = fake
    try:
        yield fake
    finally:
        head.predictor = real


class _FixedPredictor(torch.nn.Module):
    """Returns the same mask logits for every prompted object."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, prepared, pos_masks, **kwargs):
        n, hp, wp = pos_masks.shape
        return SimpleNamespace(selected_masks=torch.full((1, n, hp // 4, wp // 4), self.value))


@pytest.mark.parametrize("value", [10.0, -10.0])
def test_a_click_mask_that_disagrees_leaves_the_found_mask(segmenter, value):
    """+10: the click selects the whole image (more than MAX_GROWTH times the object); -10: an
    empty mask. Either way every found object stays as it was."""
    found = _found()
    with _swapped_predictor(segmenter.model, _FixedPredictor(value)):
        refined = refine_by_clicks(segmenter, segmenter._state(), found)
    np.testing.assert_array_equal(refined.to_labels(), found.to_labels())
    assert refined.class_names == found.class_names
    np.testing.assert_array_equal(refined.memory, found.memory)  # the found objects keep their memory


class _BlockPredictor(torch.nn.Module):
    """Each prompted object's mask: a block of 3 x 3 grid cells (12 x 12 px) around its click."""

    def forward(self, prepared, pos_masks, **kwargs):
        n, hp, wp = pos_masks.shape
        logits = torch.full((1, n, hp // 4, wp // 4), -10.0)
        for k in range(n):
            rows, cols = torch.nonzero(pos_masks[k], as_tuple=True)
            r, c = int(rows.float().mean()) // 4, int(cols.float().mean()) // 4
            logits[0, k, r - 1:r + 2, c - 1:c + 2] = 10.0
        self.last = logits[0]
        return SimpleNamespace(selected_masks=logits)


def test_agreeing_click_masks_replace_the_found_ones_without_overlap(segmenter):
    predictor = _BlockPredictor()
    found = _found()
    found_labels = found.to_labels()
    found_labels[22:24, 10:22] = 4  # a fourth object just below the first: its block overlaps the first's
    memory = np.zeros((4, 24, 32), np.float32)
    found = Segmentation.from_labels(found_labels, scores=np.array([0.9, 0.8, 0.7, 0.6], np.float32),
                                     class_names=["nucleus"] * 4, class_scores=np.full(4, 0.9, np.float32),
                                     memory=memory)
    with _swapped_predictor(segmenter.model, predictor):
        refined = refine_by_clicks(segmenter, segmenter._state(), found)
    state = segmenter._state()
    blocks = logits_to_original(segmenter._to_model_grid(state, predictor.last), SHAPE).numpy() > 0
    # objects 0-2: the blocks cover them and are at most 3x their area -> taken; object 3 (24 px):
    # its block is more than 3x its area -> its found mask stays, minus nothing (free pixels)
    assert len(refined) == 4 and refined.class_names == ["nucleus"] * 4
    for k in range(3):
        assert (found.mask(k) & blocks[k]).sum() >= 0.5 * found.mask(k).sum()
        np.testing.assert_array_equal(refined.mask(k), blocks[k] & ~blocks[:k].any(0))  # higher scores first
    np.testing.assert_array_equal(refined.mask(3), found.mask(3) & ~blocks[:3].any(0))
    for k in range(3):  # a taken click mask brings its logits as the object's memory
        np.testing.assert_array_equal(refined.memory_of(k), predictor.last[k].numpy())
    np.testing.assert_array_equal(refined.memory_of(3), memory[3])


def test_window_logits_equal_the_whole_image_path(segmenter, tiny_model):
    state = segmenter._state()
    h4, w4 = (s // 4 for s in state.features.padded_size)
    logits = torch.randn(h4, w4)
    full = logits_to_original(segmenter._to_model_grid(state, logits[None]), state.prepared.original_shape)[0]
    for box in [(slice(0, 5), slice(0, 7)), (slice(30, 41), slice(50, 63)), (slice(88, 96), slice(110, 120)),
                (slice(13, 14), slice(77, 78))]:
        window = _window(box, SHAPE)
        np.testing.assert_allclose(_window_logits(segmenter, state, logits, window), full[window].numpy(), atol=1e-6)
    resized = Segmenter(tiny_model, device="cpu", short_side=64, max_side=128, text_cache_dir=None)
    resized.set_image(make_image(SHAPE, seed=3).image)  # model side != image side: the full path
    state = resized._state()
    logits = torch.randn(*(s // 4 for s in state.features.padded_size))
    full = logits_to_original(resized._to_model_grid(state, logits[None]), state.prepared.original_shape)[0]
    window = _window((slice(30, 41), slice(50, 63)), SHAPE)
    np.testing.assert_allclose(_window_logits(resized, state, logits, window), full[window].numpy(), atol=1e-6)


def test_refined_objects_can_be_corrected_with_their_memory(segmenter):
    refined = refine_by_clicks(segmenter, segmenter._state(), _found())
    one = refined.select([0])
    rows, cols = np.nonzero(refined.mask(0))
    again = segmenter.predict(ObjectPrompt(points=[(rows[0], cols[0])]), previous=one)
    assert len(again) == 1 and again.memory.shape == one.memory.shape


def test_without_the_region_rules_text_search_is_not_refined(tiny_model):
    """``connected_objects=False`` returns SEEM's raw masks: the refinement is one of the rules."""
    assert Segmenter(tiny_model, device="cpu", text_cache_dir=None).refine_text
    image = make_image(SHAPE, seed=3).image
    results = []
    for refine in (False, True):
        seg = Segmenter(tiny_model, device="cpu", short_side=None, text_cache_dir=None, connected_objects=False,
                        refine_text=refine)
        seg.set_image(image)
        results.append(seg.predict(text="cell").to_labels())
    np.testing.assert_array_equal(results[0], results[1])


def test_click_squares_are_the_clicks_the_prompts_give(tiny_model):
    from napari_seem.engine.prompts import click_squares

    seg = Segmenter(tiny_model, device="cpu", short_side=64, max_side=128, text_cache_dir=None)
    seg.set_image(make_image(SHAPE, seed=3).image)  # resized: 96 x 120 -> 64 x 80, padded 64 x 96
    state = seg._state()
    points = np.array([[0, 0], [95, 119], [40.4, 61.7], [1, 118]])
    pos, _ = seg._padded_masks(state, [ObjectPrompt(points=[p]) for p in points])
    squares = click_squares(points, state.prepared.original_shape, state.prepared.model_shape,
                            tuple(state.features.padded_size))
    assert torch.equal(squares, pos.cpu())


def test_too_many_objects_for_one_image_are_left_as_found(segmenter, monkeypatch):
    import napari_seem.engine.refine as refine

    found = _found()
    monkeypatch.setattr(refine, "MAX_WORK", 2 * 96 * 128)  # two objects' worth on this image
    with pytest.warns(RuntimeWarning, match="segment_tiled"):
        kept = refine_by_clicks(segmenter, segmenter._state(), found)
    assert kept is found


def test_a_cell_is_clicked_in_its_cytoplasm_away_from_its_nucleus():
    rows, cols = np.ogrid[:60, :60]
    cell = (rows - 30) ** 2 + (cols - 30) ** 2 <= 20 ** 2
    nucleus = (rows - 30) ** 2 + (cols - 27) ** 2 <= 8 ** 2
    positions = cell.astype(np.int32)
    box = (slice(10, 51), slice(10, 51))
    assert _inner_point(positions, box, 1) == (30, 30)                     # the centre: on the nucleus
    r, c = _inner_point(positions, box, 1, avoid=nucleus.astype(np.int32))
    distance_to_nucleus = np.sqrt((r - 30) ** 2 + (c - 27) ** 2) - 8
    assert cell[r, c] and distance_to_nucleus > NUCLEUS_CLEARANCE          # in the cytoplasm
    assert c > 37                                                          # on the wide side of the ring
    whole = np.ones((60, 60), np.int32)                                    # all nucleus: no cytoplasm left
    assert _inner_point(positions, box, 1, avoid=whole) == (30, 30)


@pytest.mark.parametrize("rows, name, kept", [
    ((52, 54), "nucleus", False),  # a 2 px strip along the nucleus: a rim of its outline
    ((52, 54), "cell", True),  # ... of another class: an object of its own
    ((52, 66), "nucleus", True),  # a nucleus of its own that touches the first
])
def test_a_rim_along_an_object_of_its_class_is_dropped(segmenter, rows, name, kept):
    """A found piece that hugs the outline of an object of its class painted before it (what is
    left of SEEM's mask of that object after its outline was drawn again) is not an object."""
    positions = np.zeros(SHAPE, np.int32)
    positions[40:52, 40:52] = 1
    positions[rows[0]:rows[1], 40:52] = 2
    found = Segmentation.from_labels(positions, scores=np.array([0.9, 0.5], np.float32),
                                     class_names=["nucleus", name], class_scores=np.full(2, 0.9, np.float32),
                                     memory=np.zeros((2, 24, 32), np.float32), memory_index=np.arange(2))
    with _swapped_predictor(segmenter.model, _FixedPredictor(-10.0)):  # every click mask empty: found masks stay
        refined = refine_by_clicks(segmenter, segmenter._state(), found)
    assert len(refined) == (2 if kept else 1)
    np.testing.assert_array_equal(refined.mask(0), positions == 1)
    if kept:
        np.testing.assert_array_equal(refined.mask(1), positions == 2)
        assert refined.class_names == ["nucleus", name]


@pytest.mark.parametrize("centre", [(50, 60), (3, 4), (92, 117), (2, 80)])
def test_a_redrawn_object_reads_only_the_refiners_window_and_equals_the_image_sized_path(centre):
    """``_redrawn`` hands the refiner a window of the image, not image-sized arrays; at the image's
    edges too (where the refiner's window reaches past it) the outline is the same."""
    from napari_seem.engine.outline_refiner import refine_outlines
    from napari_seem.engine.refine import _redrawn

    rows, cols = np.ogrid[:SHAPE[0], :SHAPE[1]]
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= 36
    rgb01 = np.where(disc, 0.9, 0.1)[None].repeat(3, 0).astype(np.float32)
    mask = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= 49  # one pixel too large all around
    box = tuple(slice(int(np.nonzero(mask.any(a))[0][0]), int(np.nonzero(mask.any(a))[0][-1]) + 1) for a in (1, 0))
    window = _window(box, SHAPE)
    probability = np.where(mask, 0.8, 0.2).astype(np.float32)
    click = (min(centre[0], SHAPE[0] - 1), min(centre[1], SHAPE[1] - 1))
    refiner = ClickDiscRefiner(8, bright_only=True)
    local = _redrawn(refiner, rgb01, window, mask[window], probability[window], click)
    whole = refine_outlines(refiner, rgb01, mask[None], probability[None],
                            [(np.array([click], np.float64), np.zeros((0, 2)))], [0])[0]
    np.testing.assert_array_equal(local, whole[window])
    np.testing.assert_array_equal(local, disc[window])  # the refiner's outline was taken
