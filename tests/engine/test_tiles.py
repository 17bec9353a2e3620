"""Automatic mode and text search tile by tile (engine/tiles.py)."""
import numpy as np
import pytest

from napari_seem.engine import Segmenter, segment_tiled
from napari_seem.engine.tiles import default_tile, iter_tiled, tile_cores, tile_starts
from napari_seem.synthetic import make_image


@pytest.mark.parametrize("length,tile,overlap", [(100, 100, 10), (60, 100, 10), (101, 50, 10), (1000, 256, 64),
                                                 (513, 512, 0), (300, 64, 32)])
def test_tiles_cover_the_axis_and_their_cores_split_it_once(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    cores = tile_cores(starts, tile, length)
    assert starts[0] == 0 and min(starts[-1] + tile, length) == length
    assert all(0 < b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours overlap
    covered = np.zeros(length, int)
    for (a, b), start in zip(cores, starts):
        assert start <= a < b <= start + tile  # a core lies inside its tile
        covered[a:b] += 1
    assert (covered == 1).all()


@pytest.fixture
def segmenter(tiny_model):
    return Segmenter(tiny_model, device="cpu", short_side=None, text_cache_dir=None)


def test_one_tile_is_automatic_mode_on_the_whole_image(segmenter):
    image = make_image((96, 120), seed=3).image
    thresholds = dict(score_threshold=0.0, overlap_threshold=0.0)  # a random model's objects
    tiled = segment_tiled(segmenter, image, tile=128, overlap=16, **thresholds)
    segmenter.set_image(image)
    whole = segmenter.segment_everything(**thresholds)
    assert tiled.compact and tiled.memory is None and len(tiled) == len(whole) > 0
    np.testing.assert_array_equal(tiled.to_labels(), whole.to_labels())
    assert tiled.class_names == whole.class_names
    np.testing.assert_array_equal(tiled.scores, whole.scores)


def test_tiles_give_one_field_of_objects_and_leave_the_current_image(segmenter):
    image = make_image((150, 170), seed=4).image
    current = make_image((64, 64), seed=5).image
    segmenter.set_image(current)
    state = segmenter._state()
    steps = iter_tiled(segmenter, image, tile=64, overlap=16, score_threshold=0.0, overlap_threshold=0.0)
    progress = []
    while True:
        try:
            progress.append(next(steps))
        except StopIteration as finished:
            result = finished.value
            break
    assert progress == [(k, 12) for k in range(1, 13)]  # 3 x 4 tiles of 64 px
    assert segmenter._state() is state  # clicks go on on the image the user sees
    assert result.shape == (150, 170) and result.compact and len(result) > 0
    assert (result.areas() > 0).all()
    np.testing.assert_array_equal(result.object_ids, np.arange(1, len(result) + 1))
    labels = result.to_labels()
    assert set(np.unique(labels)) - {0} == set(result.object_ids.tolist())
    assert segment_tiled(segmenter, image, text="cell", tile=64, overlap=16).shape == (150, 170)


def test_stopping_early_restores_the_current_image(segmenter):
    segmenter.set_image(make_image((64, 64), seed=5).image)
    state = segmenter._state()
    steps = iter_tiled(segmenter, make_image((150, 170), seed=4).image, tile=64, overlap=16)
    next(steps)
    assert segmenter._state() is state  # between tiles, even if the caller never comes back
    steps.close()
    assert segmenter._state() is state


def test_tiles_check_their_arguments(segmenter):
    image = np.zeros((80, 80), np.uint8)
    with pytest.raises(ValueError, match="not both"):
        segment_tiled(segmenter, image, text="cell", vocabulary=["cell"])
    with pytest.raises(ValueError, match="at least 32"):
        segment_tiled(segmenter, image, tile=16)
    with pytest.raises(ValueError, match="half the tile"):
        segment_tiled(segmenter, image, tile=64, overlap=40)
    with pytest.raises(ValueError, match="text prompt is empty"):
        segment_tiled(segmenter, image, text=" ")
    bad = np.zeros((80, 80), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        segment_tiled(segmenter, bad)


def test_default_tile_follows_the_segmenters_scale(tiny_model):
    assert default_tile(Segmenter(tiny_model, device="cpu", short_side=None, text_cache_dir=None)) == 256
    assert default_tile(Segmenter(tiny_model, device="cpu", short_side=384, text_cache_dir=None)) == 384
    # with a scale, the image pixels that make the working size in model pixels
    assert default_tile(Segmenter(tiny_model, device="cpu", short_side=None, scale=0.5, text_cache_dir=None)) == 512
    assert default_tile(Segmenter(tiny_model, device="cpu", short_side=384, scale=2.0, text_cache_dir=None)) == 192
