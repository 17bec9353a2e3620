import numpy as np
import pytest

from napari_seem.engine.prompts import ObjectPrompt, rasterize, stack_prompts


def test_click_is_3x3_square_at_model_resolution():
    pos, neg = rasterize(ObjectPrompt(points=[(10, 20)]), (50, 60), (50, 60))
    assert pos.sum() == 9 and pos[9:12, 19:22].all()
    assert not neg.any()


def test_click_scaled_to_model_pixel_centre():
    pos, _ = rasterize(ObjectPrompt(points=[(9, 19)]), (20, 40), (40, 80))
    rows, cols = np.nonzero(pos)
    assert rows.mean() == pytest.approx(18.5, abs=0.6) and cols.mean() == pytest.approx(38.5, abs=0.6)


def test_negative_point_and_overlap_goes_to_positive():
    prompt = ObjectPrompt(points=[(10, 10), (10, 11), (30, 30)], point_labels=[1, 0, 0])
    pos, neg = rasterize(prompt, (40, 40), (40, 40))
    assert pos[10, 10] and neg[30, 30]
    assert not (pos & neg).any()


def test_box_polygon_stroke_mask():
    mask = np.zeros((40, 40), bool)
    mask[30:35, 30:35] = True
    prompt = ObjectPrompt(
        boxes=[(2, 2, 8, 10)],
        polygons=[np.array([[20, 2], [20, 12], [28, 7]])],
        strokes=[np.array([[35, 0], [35, 20]])],
        mask=mask,
    )
    pos, neg = rasterize(prompt, (40, 40), (40, 40))
    assert pos[2:9, 2:11].all() and pos[22, 7] and pos[35, 5] and pos[32, 32]
    assert pos[34:37, 0:21].all()  # stroke dilated to 3 px
    assert not neg.any()


def test_box_clipped_and_outside_rejected():
    pos, _ = rasterize(ObjectPrompt(boxes=[(-5, -5, 3, 3)]), (10, 10), (10, 10))
    assert pos[0:4, 0:4].all() and pos.sum() == 16
    with pytest.raises(ValueError, match="outside"):
        rasterize(ObjectPrompt(boxes=[(20, 20, 30, 30)]), (10, 10), (10, 10))


def test_errors_are_named():
    with pytest.raises(ValueError, match="empty prompt"):
        rasterize(ObjectPrompt(), (10, 10), (10, 10))
    with pytest.raises(ValueError, match="outside the image"):
        rasterize(ObjectPrompt(points=[(50, 2)]), (10, 10), (10, 10))
    with pytest.raises(ValueError, match="mask has shape"):
        rasterize(ObjectPrompt(mask=np.ones((5, 5), bool)), (10, 10), (10, 10))
    with pytest.raises(ValueError, match="one entry per point"):
        ObjectPrompt(points=[(1, 1)], point_labels=[1, 0])
    with pytest.raises(ValueError, match="NaN"):
        ObjectPrompt(points=[(np.nan, 1)])
    with pytest.raises(ValueError, match="no prompt"):
        stack_prompts([], (10, 10), (10, 10))


def test_thin_mask_survives_downscaling():
    mask = np.zeros((100, 100), bool)
    mask[51, 10:90] = True
    pos, _ = rasterize(ObjectPrompt(mask=mask), (100, 100), (25, 25))
    assert pos.any()


def test_stack_prompts_shapes():
    pos, neg = stack_prompts([ObjectPrompt(points=[(1, 1)]), ObjectPrompt(points=[(5, 5)], point_labels=[0])], (8, 8), (8, 8))
    assert pos.shape == neg.shape == (2, 8, 8)
    assert pos[0].any() and not pos[1].any() and neg[1].any()
