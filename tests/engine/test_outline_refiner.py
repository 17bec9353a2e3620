"""The outline refiner's windows, inputs, paste-back and files (no trained weights needed)."""
import numpy as np
import pytest
import torch

from napari_seem.engine.outline_refiner import (
    CHANNELS,
    MARGIN,
    WINDOW,
    OutlineRefiner,
    click_map,
    crop,
    keep_clicked,
    load_refiner,
    refine_outlines,
    refiner_input,
    save_refiner,
    window_for,
)


def _disc(shape, centre, radius):
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def test_the_network_keeps_the_window_size_and_counts_its_channels():
    net = OutlineRefiner(width=4, classes=("nucleus", "cell")).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, len(CHANNELS), WINDOW, WINDOW))
    assert out.shape == (2, 1, WINDOW, WINDOW)
    assert net.classes == ("nucleus", "cell")


def test_the_window_is_centred_on_the_mask_and_may_reach_past_the_edge():
    mask = _disc((100, 120), (50, 60), 8)
    r0, c0 = window_for(mask)
    assert (r0 + WINDOW // 2, c0 + WINDOW // 2) == (50, 60)
    edge = _disc((100, 120), (3, 3), 6)
    r0, c0 = window_for(edge)
    assert r0 < 0 and c0 < 0
    window = crop(edge, (r0, c0))
    assert window.shape == (WINDOW, WINDOW) and window.sum() == edge.sum()  # nothing lost, zeros outside
    assert window_for(np.zeros((50, 50), bool)) is None
    big = np.zeros((200, 200), bool)
    big[10:10 + WINDOW - 2 * MARGIN + 1, 10:20] = True  # one pixel too tall for the window
    assert window_for(big) is None


def test_the_image_is_padded_with_its_edge_values():
    image = np.arange(3 * 20 * 30, dtype=np.float32).reshape(3, 20, 30)
    window = crop(image, (-5, -7), "edge")
    assert window.shape == (3, WINDOW, WINDOW)
    assert np.all(window[:, :5, 7] == image[:, 0, 0][:, None])


def test_click_maps_mark_discs_in_window_coordinates():
    m = click_map(np.array([[10.0, 12.0]]), (WINDOW, WINDOW), origin=(4, 6))
    assert m[6, 6] == 1 and m[6, 8] == 1 and m[6, 9] == 0 and m.sum() == 13  # radius-2 disc at (6, 6)
    assert click_map(np.zeros((0, 2)), (8, 8)).sum() == 0


def test_the_input_stacks_image_mask_probability_and_clicks():
    rgb = np.random.default_rng(0).random((3, 80, 80)).astype(np.float32)
    mask = _disc((80, 80), (40, 40), 6)
    prob = mask * 0.9
    x = refiner_input(rgb, mask, prob, np.array([[40.0, 40.0]]), np.array([[40.0, 50.0]]), (8, 8))
    assert x.shape == (len(CHANNELS), WINDOW, WINDOW) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:3], rgb[:, 8:8 + WINDOW, 8:8 + WINDOW])
    assert x[CHANNELS.index("mask")].sum() == mask.sum()
    assert x[CHANNELS.index("positive"), 32, 32] == 1 and x[CHANNELS.index("negative"), 32, 42] == 1


def test_only_the_clicked_regions_are_kept():
    drawn = np.zeros((WINDOW, WINDOW), bool)
    drawn[10:20, 10:20] = True
    drawn[40:50, 40:50] = True
    kept = keep_clicked(drawn, np.array([[45.0, 45.0]]), (0, 0), fallback=drawn)
    assert kept[45, 45] and not kept[15, 15]
    fallback = np.zeros_like(drawn)
    fallback[12:18, 12:18] = True  # no click inside: the region overlapping the engine's mask
    kept = keep_clicked(drawn, np.array([[60.0, 2.0]]), (0, 0), fallback=fallback)
    assert kept[15, 15] and not kept[45, 45]


class _StandIn(torch.nn.Module):
    """A stand-in refiner for nuclei (one parameter, so that it has a device)."""

    classes = ("nucleus",)
    window = WINDOW

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))


class _ShiftRight(_StandIn):
    """Draws the engine's mask two pixels to the right."""

    def forward(self, x):
        mask = x[:, CHANNELS.index("mask"):CHANNELS.index("mask") + 1]
        return torch.roll(mask, 2, dims=3) * 20 - 10


def test_refined_masks_are_pasted_back_where_they_belong_also_at_the_image_edge():
    shape = (70, 90)
    masks = np.stack([_disc(shape, (35, 45), 6), _disc(shape, (4, 86), 5), _disc(shape, (60, 10), 5)])
    clicks = [(np.array([[35.0, 45.0]]), np.zeros((0, 2))), (np.array([[4.0, 86.0]]), np.zeros((0, 2))),
              (np.zeros((0, 2)), np.zeros((0, 2)))]  # the third object has no positive click: left as it is
    out = refine_outlines(_ShiftRight(), np.zeros((3, *shape), np.float32), masks, masks.astype(np.float32),
                          clicks, indices=[0, 1, 2])
    np.testing.assert_array_equal(out[0], np.roll(masks[0], 2, axis=1))
    expected = np.roll(masks[1], 2, axis=1)
    expected[:, :2] = False  # what moved past the right edge is gone, not wrapped round
    np.testing.assert_array_equal(out[1], expected)
    np.testing.assert_array_equal(out[2], masks[2])
    assert masks[0].sum() == _disc(shape, (35, 45), 6).sum()  # the input is not changed


class _Speck(_StandIn):
    """Draws only a speck at the window's centre."""

    def forward(self, x):
        out = torch.full((x.shape[0], 1, WINDOW, WINDOW), -10.0)
        out[:, :, WINDOW // 2 - 1:WINDOW // 2 + 2, WINDOW // 2 - 1:WINDOW // 2 + 2] = 10.0
        return out


def test_a_refined_mask_that_is_another_object_is_not_taken():
    """The refiner redraws an outline; where its mask overlaps the engine's by less than
    MIN_AGREEMENT (a cell named nucleus, drawn as the nucleus inside), the engine's stays."""
    shape = (64, 64)
    masks = np.stack([_disc(shape, (32, 32), 10), _disc(shape, (32, 32), 1)])
    clicks = [(np.array([[32.0, 32.0]]), np.zeros((0, 2)))] * 2
    out = refine_outlines(_Speck(), np.zeros((3, *shape), np.float32), masks, masks.astype(np.float32),
                          clicks, indices=[0, 1])
    np.testing.assert_array_equal(out[0], masks[0])  # IoU 9 / 317: not the same object
    assert out[1].sum() == 9 and out[1][31:34, 31:34].all()  # IoU 5 / 9 >= 0.5: redrawn


def test_a_refined_mask_inside_the_engine_s_is_taken_when_the_caller_asks():
    """``inside_share``: a caller that knows the object (a propagated nucleus) takes an outline
    that lies within the engine's mask, however much smaller (a leak cut back)."""
    shape = (64, 64)
    ring = _disc(shape, (32, 32), 10) & ~_disc(shape, (32, 32), 3)  # the speck falls in its hole
    masks = np.stack([_disc(shape, (32, 32), 10), ring])
    clicks = [(np.array([[32.0, 32.0]]), np.zeros((0, 2)))] * 2
    out = refine_outlines(_Speck(), np.zeros((3, *shape), np.float32), masks, masks.astype(np.float32),
                          clicks, indices=[0, 1], inside_share=0.9)
    assert out[0].sum() == 9 and out[0][31:34, 31:34].all()  # 9 of 9 inside: taken
    np.testing.assert_array_equal(out[1], ring)              # 0 of 9 inside: another object
    nothing = refine_outlines(_Nothing(), np.zeros((3, *shape), np.float32), masks, masks.astype(np.float32),
                              clicks, indices=[0, 1], inside_share=0.9)
    np.testing.assert_array_equal(nothing, masks)            # an empty outline is not "inside"


class _Nothing(_StandIn):
    """Draws nothing."""

    def forward(self, x):
        return torch.full((x.shape[0], 1, WINDOW, WINDOW), -10.0)


def test_with_no_agreement_asked_any_outline_but_an_empty_one_is_taken():
    """``min_agreement=0`` (a clicked cell: SEEM's mask may be its neighbour): the refiner's outline
    replaces the engine's mask however little they overlap; an empty outline never does."""
    shape = (64, 64)
    masks = np.stack([_disc(shape, (32, 32), 10)])
    clicks = [(np.array([[32.0, 32.0]]), np.zeros((0, 2)))]
    rgb = np.zeros((3, *shape), np.float32)
    out = refine_outlines(_Speck(), rgb, masks, masks.astype(np.float32), clicks, indices=[0], min_agreement=0.0)
    assert out[0].sum() == 9 and out[0][31:34, 31:34].all()  # IoU 9 / 317, taken
    kept = refine_outlines(_Speck(), rgb, masks, masks.astype(np.float32), clicks, indices=[0])
    np.testing.assert_array_equal(kept, masks)               # the default rule keeps the engine's
    nothing = refine_outlines(_Nothing(), rgb, masks, masks.astype(np.float32), clicks, indices=[0],
                              min_agreement=0.0)
    np.testing.assert_array_equal(nothing, masks)


class _Wide(_StandIn):
    """A refiner of cells with a 96 px window that draws the engine's mask as it is."""

    classes = ("cell",)
    window = 96

    def forward(self, x):
        assert x.shape[-2:] == (96, 96)
        return x[:, CHANNELS.index("mask"):CHANNELS.index("mask") + 1] * 20 - 10


def test_a_refiner_reads_and_draws_its_own_window():
    big = _disc((160, 160), (80, 80), 36)  # 73 px across: too large for 64 px, fits in 96 px
    assert window_for(big) is None and window_for(big, 96) == (32, 32)
    assert crop(big, (32, 32), window=96).sum() == big.sum()
    x = refiner_input(np.zeros((3, 160, 160), np.float32), big, big * 0.9, np.array([[80.0, 80.0]]),
                      np.zeros((0, 2)), (32, 32), window=96)
    assert x.shape == (len(CHANNELS), 96, 96)
    clicks = [(np.array([[80.0, 80.0]]), np.zeros((0, 2)))]
    out = refine_outlines(_Wide(), np.zeros((3, 160, 160), np.float32), big[None], big[None].astype(np.float32),
                          clicks, indices=[0], min_agreement=0.0)
    np.testing.assert_array_equal(out[0], big)
    net = OutlineRefiner(width=4, classes=("cell",), window=96).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, len(CHANNELS), 96, 96)).shape == (1, 1, 96, 96)
    for bad in (60, 8, 96.5):
        with pytest.raises(ValueError, match="window"):
            OutlineRefiner(width=4, window=bad)


def test_refined_objects_are_only_those_asked_for():
    shape = (64, 64)
    masks = np.stack([_disc(shape, (30, 30), 6)])
    clicks = [(np.array([[30.0, 30.0]]), np.zeros((0, 2)))]
    out = refine_outlines(_ShiftRight(), np.zeros((3, *shape), np.float32), masks, masks.astype(np.float32),
                          clicks, indices=[])
    np.testing.assert_array_equal(out, masks)


def test_a_refiner_survives_a_round_trip_through_its_file(tmp_path):
    torch.manual_seed(0)
    net = OutlineRefiner(width=4, classes=("nucleus",)).eval()
    path = save_refiner(net, tmp_path / "r.safetensors")
    loaded = load_refiner(path)
    assert loaded.classes == ("nucleus",) and loaded.width == 4 and loaded.window == WINDOW and not loaded.training
    x = torch.rand(1, len(CHANNELS), WINDOW, WINDOW)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.half().float()(x), atol=1e-3, rtol=1e-3)
    cells = load_refiner(save_refiner(OutlineRefiner(width=4, classes=("cell",), window=96), tmp_path / "c.safetensors"))
    assert cells.classes == ("cell",) and cells.window == 96


def test_a_refiner_file_from_before_windows_were_saved_reads_as_64_px(tmp_path):
    from safetensors.torch import save_file

    net = OutlineRefiner(width=4)
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"width": "4", "classes": "nucleus"})
    assert load_refiner(path).window == 64
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"width": "4", "classes": "nucleus", "window": "60"})
    with pytest.raises(ValueError, match="invalid outline-refiner settings"):
        load_refiner(path)


def test_a_file_that_is_not_a_refiner_is_named_in_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_refiner(bad)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="no outline-refiner settings"):
        load_refiner(other)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"w": torch.zeros(2)}, str(wrong), metadata={"width": "4", "classes": "nucleus"})
    with pytest.raises(ValueError, match="does not hold an outline refiner"):
        load_refiner(wrong)


def test_the_segmenter_prepares_the_refiners_image_once_per_image():
    from napari_seem.engine import Segmenter
    from napari_seem.weights import load_shipped_model

    seg = Segmenter(load_shipped_model(), device="cpu", short_side=None, text_cache_dir=None)
    image = (np.random.default_rng(0).random((64, 96)) * 255).astype(np.uint8)
    seg.set_image(image)
    first = seg.refiner_image()
    assert first.shape == (3, 64, 96) and 0 <= first.min() and first.max() <= 1
    assert seg.refiner_image() is first  # a click does not convert the image again
    seg.set_image(image[::-1].copy())
    assert seg.refiner_image() is not first


def test_a_segmenter_runs_one_refiner_per_class_and_takes_a_clicked_cell_s_outline():
    """Several refiners, one per class (the shipped model's: nuclei, cells). A clicked cell's
    outline is its refiner's whatever its overlap with SEEM's mask (``CLICKED_AGREEMENT``); a
    clicked nucleus keeps the ``MIN_AGREEMENT`` rule."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from refiner_stub import ClickDiscRefiner

    from napari_seem.engine import ObjectPrompt, Segmenter
    from napari_seem.engine.segmenter import CLICKED_AGREEMENT
    from napari_seem.synthetic import make_image, object_centre
    from napari_seem.weights import load_shipped_model

    assert CLICKED_AGREEMENT == {"cell": 0.0}
    cells = ClickDiscRefiner(3)
    cells.classes, cells.window = ("cell",), 96
    nuclei = ClickDiscRefiner(3)
    seg = Segmenter(load_shipped_model(), device="cpu", short_side=None, text_cache_dir=None,
                    vocabulary=["nucleus", "cell", "vesicle"], refiner=[nuclei, cells])
    assert seg.refiners == (nuclei, cells) and seg.refiner_for("cell") is cells and seg.refiner_for("vesicle") is None
    s = make_image((256, 256), seed=5000)
    seg.set_image(s.image)
    drawn = {}
    for name in ("cell", "nucleus"):
        obj = next(o for o in s.objects if o["class"] == name and (s.instances == o["id"]).sum() >= 200)
        point = object_centre(s.instances, obj["id"])
        result = seg.predict(ObjectPrompt(points=[point]))
        assert result.class_names == [name]
        disc = _disc(s.image.shape[:2], point, 3)
        drawn[name] = np.array_equal(result.masks[0], disc)
    assert drawn == {"cell": True, "nucleus": False}  # a 29 px disc in a cell's mask: taken; a nucleus's: not
    seg.refiner = None
    assert seg.refiners == () and seg.refiner is None
    with pytest.raises(ValueError, match="same class"):
        seg.refiner = [nuclei, ClickDiscRefiner(3)]
    with pytest.raises(TypeError, match="OutlineRefiner"):
        seg.refiner = ["refiner.safetensors"]
