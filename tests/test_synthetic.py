"""Tests of the synthetic fluorescence-microscopy generator (napari_seem.synthetic)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from napari_seem.synthetic import (
    CHANNEL_MODES, CLASS_NAMES, SceneConfig, make_image, make_sequence, object_centre, object_table,
)
from napari_seem.synthetic.scene import LabelMaps

MAPS = ("instances", "classes", "cells", "nuclei", "vesicles")
CLASS_MAP = {"cell": "cells", "nucleus": "nuclei", "vesicle": "vesicles"}


@pytest.fixture(scope="module")
def images():
    return [make_image(seed=s) for s in range(6)]


@pytest.fixture(scope="module")
def timelapses():
    return [make_sequence(n_frames=20, shape=(192, 192), seed=s, axis="t") for s in range(4)]


@pytest.fixture(scope="module")
def zstack():
    return make_sequence(n_frames=16, shape=(192, 192), seed=1, axis="z")


def test_class_names():
    assert CLASS_NAMES == ("background", "nucleus", "cell", "vesicle")


def test_image_is_deterministic():
    a, b = make_image(seed=7), make_image(seed=7)
    for name in ("image", *MAPS):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.objects == b.objects
    c = make_image(seed=8)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.instances, c.instances)


def test_render_options_keep_the_geometry():
    base = make_image(seed=3)
    other = make_image(seed=3, bit_depth=16, channels="rgb")
    for name in MAPS:
        np.testing.assert_array_equal(getattr(base, name), getattr(other, name))


def test_sequence_is_deterministic():
    for axis in ("t", "z"):
        a = make_sequence(6, (96, 96), seed=5, axis=axis)
        b = make_sequence(6, (96, 96), seed=5, axis=axis)
        for name in ("image", *MAPS):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.events == b.events and a.tracks == b.tracks
        assert not np.array_equal(a.image, make_sequence(6, (96, 96), seed=6, axis=axis).image)


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_dtype_and_range(bit_depth, dtype):
    for seed in range(3):
        img = make_image((128, 160), seed=seed, bit_depth=bit_depth).image
        assert img.dtype == dtype and img.shape == (128, 160)
        assert (img == np.iinfo(dtype).max).mean() < 0.01  # hardly any saturation
        if bit_depth == 16:
            assert img.max() > 2000  # uses the 16-bit range, not an 8-bit image in a 16-bit container
        else:
            assert img.max() > 80
        assert len(np.unique(img)) > 30


def test_channel_modes():
    shapes = {mode: make_image((96, 96), seed=2, channels=mode).image.shape for mode in CHANNEL_MODES}
    assert shapes.pop("rgb") == (96, 96, 3)
    assert set(shapes.values()) == {(96, 96)}
    with pytest.raises(ValueError):
        make_image((64, 64), channels="bogus")
    with pytest.raises(ValueError):
        make_image((64, 64), bit_depth=12)


def test_objects_are_brighter_than_background(images):
    for s in images:
        img = s.image.astype(float)
        background = img[s.classes == 0].mean()
        assert img[s.nuclei > 0].mean() > background + 10
        assert img[s.cells > 0].mean() > background + 3


def test_rgb_channels_show_their_class():
    s = make_image(seed=4, channels="rgb")
    red, green, blue = (s.image[..., i].astype(float) for i in range(3))
    cytoplasm = (s.cells > 0) & (s.nuclei == 0) & (s.vesicles == 0)
    assert blue[s.nuclei > 0].mean() > blue[cytoplasm].mean() + 20  # DAPI-like nuclei
    assert green[cytoplasm].mean() > green[s.classes == 0].mean() + 20  # cytoplasm stain
    assert red[s.vesicles > 0].mean() > red[cytoplasm].mean() + 20  # puncta


def test_table_matches_maps(images):
    for s in images:
        ids = [row["id"] for row in s.objects]
        assert ids == list(range(1, len(ids) + 1))  # unique, sequential
        assert {row["class"] for row in s.objects} == {"cell", "nucleus", "vesicle"}
        for row in s.objects:
            own = getattr(s, CLASS_MAP[row["class"]]) == row["id"]
            assert own.sum() == row["area"] > 0
            rows, cols = np.nonzero(own)
            assert np.allclose(row["centroid"], (rows.mean(), cols.mean()))
            visible = s.instances == row["id"]
            assert visible.any(), f"object {row['id']} hidden in instances"
            assert (s.classes[visible] == CLASS_NAMES.index(row["class"])).all()
            if row["class"] == "nucleus":
                assert (s.cells[own] == row["parent"]).all() and row["parent"] > 0
            if row["class"] == "vesicle":
                assert (s.cells[own] == row["parent"]).all() and (s.nuclei[own] == 0).all()
        # maps hold nothing the table does not list
        for name in ("cells", "nuclei", "vesicles"):
            assert set(np.unique(getattr(s, name))) - {0} <= set(ids)
        assert ((s.instances == 0) == (s.classes == 0)).all()


def test_realism_knobs_are_randomised(images):
    n_cells = {sum(r["class"] == "cell" for r in s.objects) for s in images}
    assert len(n_cells) >= 3
    assert all(4 <= n <= 12 for n in n_cells)
    s = images[0]
    nucleated = {r["parent"] for r in s.objects if r["class"] == "nucleus"}
    cells = [r for r in s.objects if r["class"] == "cell"]
    assert len(nucleated) >= 0.6 * len(cells)
    areas = [r["area"] for r in cells]
    assert max(areas) > 1.5 * min(areas)


def test_touching_and_separate_cells():
    touching = separate = 0
    for seed in range(6):
        cells = make_image(seed=seed).cells
        pairs = set()
        for a, b in ((cells[1:], cells[:-1]), (cells[:, 1:], cells[:, :-1])):
            border = (a != b) & (a > 0) & (b > 0)
            pairs |= {tuple(sorted(p)) for p in zip(a[border], b[border], strict=True)}
        touching += len(pairs)
        n = len(np.unique(cells)) - 1
        separate += n - len({i for p in pairs for i in p})
    assert touching > 0 and separate > 0


def test_object_centre_inside(images):
    for s in images[:3]:
        for row in s.objects:
            r, c = object_centre(s.instances, row["id"])
            assert s.instances[r, c] == row["id"]
            own = getattr(s, CLASS_MAP[row["class"]])
            r, c = object_centre(own, row["id"])
            assert own[r, c] == row["id"]
    with pytest.raises(ValueError):
        object_centre(images[0].instances, 10**6)


def test_object_centre_of_concave_shape():
    lab = np.zeros((60, 60), np.int32)
    rows, cols = np.indices(lab.shape)
    dist = np.hypot(rows - 30, cols - 30)
    lab[(dist > 12) & (dist < 22) & (cols < 40)] = 5  # a thick "C": its centroid is in the hole
    rows_in, cols_in = np.nonzero(lab == 5)
    assert lab[int(round(rows_in.mean())), int(round(cols_in.mean()))] == 0
    r, c = object_centre(lab, 5)
    assert lab[r, c] == 5
    assert 15 <= np.hypot(r - 30, c - 30) <= 19  # middle of the ring's thickness


def test_object_table_parent_and_free_vesicles():
    cells = np.zeros((20, 20), np.int32)
    cells[2:12, 2:12] = 1
    nuclei = np.zeros_like(cells)
    nuclei[5:8, 5:8] = 2
    vesicles = np.zeros_like(cells)
    vesicles[3, 3] = 3
    vesicles[15:17, 15] = 4
    zeros = np.zeros(cells.shape, np.float32)
    table = object_table(LabelMaps(cells, nuclei, vesicles, zeros, zeros))
    assert [(r["id"], r["class"], r["parent"], r["area"]) for r in table] == [
        (1, "cell", 0, 100), (2, "nucleus", 1, 9), (3, "vesicle", 1, 1), (4, "vesicle", 0, 2)]
    assert table[3]["centroid"] == (15.5, 15.0)


def test_timelapse_shapes_and_identity(timelapses):
    bounds = {"cell": 12.0, "nucleus": 10.0, "vesicle": 10.0}
    moved = []
    for seq in timelapses:
        assert seq.image.shape == seq.instances.shape == (20, 192, 192)
        assert seq.image.dtype == np.uint8 and seq.instances.dtype == np.int32
        for t in range(1, 20):
            before = {r["id"]: r for r in seq.objects[t - 1]}
            now = {r["id"]: r for r in seq.objects[t]}
            for oid in before.keys() & now.keys():
                assert before[oid]["class"] == now[oid]["class"]
                step = np.hypot(*np.subtract(before[oid]["centroid"], now[oid]["centroid"]))
                assert step <= bounds[now[oid]["class"]], (oid, t, step)
                if now[oid]["class"] == "nucleus":
                    moved.append(step)
        assert not np.array_equal(seq.image[0], seq.image[1])  # fresh noise per frame
    assert np.mean(moved) > 0.2  # objects do move


def test_timelapse_events(timelapses):
    causes = set()
    for seq in timelapses:
        present = [{r["id"] for r in table} for table in seq.objects]
        for event in seq.events:
            t, oid = event["frame"], event["id"]
            if event["kind"] == "appear":
                assert oid in present[t] and oid not in present[t - 1]
            else:
                assert oid in present[t - 1] and oid not in present[t]
            causes.add((event["kind"], event["class"], event["cause"]))
        n_changes = sum(len(present[t] ^ present[t - 1]) for t in range(1, 20))
        assert n_changes == len(seq.events)
        for track in seq.tracks:
            assert track["n_frames"] == sum(track["id"] in p for p in present)
            if track["mother"]:  # daughters start right after their mother ends
                mother = next(tr for tr in seq.tracks if tr["id"] == track["mother"])
                assert mother["last"] == track["first"] - 1 and track["class"] == "cell"
    assert {("appear", "cell", "division"), ("vanish", "cell", "division")} <= causes
    assert any(kind == "appear" and cause == "border" for kind, _, cause in causes)


def test_zstack_objects_grow_and_shrink(zstack):
    assert zstack.image.shape == (16, 192, 192) and zstack.axis == "z"
    assert zstack.events and all(e["cause"] == "slice" for e in zstack.events)
    starts = ends = 0
    for track in (tr for tr in zstack.tracks if tr["class"] == "cell"):
        areas = [next(r["area"] for r in zstack.objects[t] if r["id"] == track["id"])
                 for t in range(track["first"], track["last"] + 1)]
        assert track["n_frames"] == len(areas)  # one body: no gaps
        if track["first"] > 0:  # starts inside the stack: grows from a small cap
            assert max(areas) > 1.5 * areas[0]
            starts += 1
        if track["last"] < 15:
            assert max(areas) > 1.5 * areas[-1]
            ends += 1
    assert starts and ends


def test_rgb_sequence():
    seq = make_sequence(4, (64, 64), seed=0, channels="rgb", bit_depth=16)
    assert seq.image.shape == (4, 64, 64, 3) and seq.image.dtype == np.uint16


def test_custom_scene_config():
    s = make_image((128, 128), seed=0, n_cells=3,
                   scene_config=SceneConfig(nucleus_prob=1.0, vesicles_per_cell=0, free_vesicles=0))
    classes = [r["class"] for r in s.objects]
    assert "vesicle" not in classes
    assert 1 <= classes.count("cell") <= 3
    assert classes.count("nucleus") == classes.count("cell")


def test_image_timing():
    make_image(seed=0)  # warm-up (imports, caches)
    best = min(_timed(lambda s=s: make_image((256, 256), seed=s)) for s in range(3))
    assert best < 0.5


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
