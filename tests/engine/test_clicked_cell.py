"""Which nucleus a click in a cell's cytoplasm belongs to (napari_seem.engine.clicked_cell)."""
import numpy as np
import pytest

from napari_seem.engine import ObjectPrompt
from napari_seem.engine.connected import centre_pixel
from napari_seem.engine.clicked_cell import (
    is_lone_click,
    missed_nucleus,
    nearest_label,
    nucleus_basins,
)


def _two_cells():
    """Two touching round cells on a dark background, each brightest at its nucleus: the left one
    (nucleus 1, centre (30, 22)) and the right one (nucleus 2, centre (30, 50)), meeting at col 38 (row 30)."""
    rows, cols = np.mgrid[:60, :80]
    left = np.hypot(rows - 30, cols - 22)
    right = np.hypot(rows - 30, cols - 50)
    image = np.full((60, 80), 10.0)
    image += np.where(left < 16, 100 - 3 * left, 0) + np.where((right < 16) & (left >= 16), 100 - 3 * right, 0)
    nuclei = np.zeros((60, 80), np.int32)
    nuclei[left < 5] = 1
    nuclei[right < 5] = 2
    cells = np.where(left < 16, 1, np.where(right < 16, 2, 0))
    noise = np.random.default_rng(0).normal(0, 1, image.shape)
    return image + noise, nuclei, cells


def test_basins_part_touching_cells_where_they_meet():
    image, nuclei, cells = _two_cells()
    basins = nucleus_basins(image, nuclei)
    assert basins[0, 0] == 0 and basins[5, 75] == 0                    # the background is no one's
    inside = cells > 0
    assert (basins[inside] == cells[inside]).mean() > 0.95
    assert basins[30, 33] == 1 and basins[30, 39] == 2                 # either side of where they meet


def test_basins_need_an_image_of_the_nuclei_shape():
    image, nuclei, _ = _two_cells()
    with pytest.raises(ValueError, match="differ in shape"):
        nucleus_basins(image[:, :-1], nuclei)


def test_nearest_label_within_a_radius():
    labels = np.zeros((20, 20), np.int32)
    labels[2, 2] = 3
    labels[10, 15] = 4
    assert nearest_label(labels, (10, 10), 6) == 4
    assert nearest_label(labels, (10, 10), 4) == 0                     # 5 px away: out of reach
    assert nearest_label(labels, (3.4, 2.6), 2) == 3


def test_the_centre_pixel_lies_inside_a_concave_region():
    labels = np.zeros((30, 30), np.int32)
    labels[5:25, 5:9] = 7
    labels[5:9, 5:25] = 7                                              # an L: its centroid (11, 11) is outside it
    r, c = centre_pixel(labels == 7)
    assert labels[r, c] == 7 and (r, c) in {(8, 11), (11, 8)}   # the nearest inside, 2.9 px away


def test_only_a_lone_positive_click_counts():
    assert is_lone_click(ObjectPrompt(points=[(3, 4)]))
    assert not is_lone_click(ObjectPrompt(points=[(3, 4)], point_labels=[0]))
    assert not is_lone_click(ObjectPrompt(points=[(3, 4), (5, 6)]))
    assert not is_lone_click(ObjectPrompt(points=[(3, 4)], boxes=[(0, 0, 9, 9)]))
    assert not is_lone_click(ObjectPrompt(points=[(3, 4)], strokes=[np.array([(1, 1), (2, 2)])]))
    assert not is_lone_click(ObjectPrompt(points=[(3, 4)], mask=np.ones((10, 10), bool)))


class _Basins:
    """The basins, counting how often they were asked for."""

    def __init__(self, basins):
        self.basins, self.calls = basins, 0

    def __call__(self):
        self.calls += 1
        return self.basins


def test_a_mask_of_the_neighbour_misses_the_clicked_cells_nucleus():
    image, nuclei, cells = _two_cells()
    areas = np.bincount(nuclei.ravel())
    basins = _Basins(nucleus_basins(image, nuclei))
    click = (30, 31)                                                   # in the left cell, beside the right one
    assert missed_nucleus(cells == 2, click, nuclei, areas, basins) == 1
    assert missed_nucleus(cells == 1, click, nuclei, areas, basins) == 0   # the right mask: nothing to do
    assert missed_nucleus(np.zeros_like(nuclei, bool), click, nuclei, areas, basins) == 0


def test_the_cues_must_agree():
    image, nuclei, cells = _two_cells()
    areas = np.bincount(nuclei.ravel())
    click = (30, 31)
    other_basin = _Basins(np.where(cells > 0, 2, 0))                   # the basin names the right cell
    assert missed_nucleus(cells == 2, click, nuclei, areas, other_basin) == 0
    assert other_basin.calls == 1
    # the nearest nucleus is the one the mask covers: the basins are not even made
    near_right = _Basins(nucleus_basins(image, nuclei))
    assert missed_nucleus(cells == 2, (30, 40), nuclei, areas, near_right) == 0
    assert near_right.calls == 0


def test_a_mask_covering_no_nucleus_is_left_alone():
    image, nuclei, cells = _two_cells()
    areas = np.bincount(nuclei.ravel())
    basins = _Basins(nucleus_basins(image, nuclei))
    rim = (cells == 2) & (nuclei == 0)                                 # the right cell without its nucleus
    assert missed_nucleus(rim, (30, 31), nuclei, areas, basins) == 0
    assert basins.calls == 0
