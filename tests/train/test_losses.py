import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_seem.train.losses import (
    boundary_band, class_loss, dice_loss, downsample_targets, full_mask_loss, hungarian, mask_costs, match_queries,
    point_mask_loss, pool_targets, prepare_masks, prepared_mask_loss, sample_points, uncertain_points, upsample,
)


def test_dice_loss_value():
    logits = torch.tensor([[0.0, 0.0, 10.0, -10.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    p = logits.sigmoid()
    expected = 1 - (2 * (p * targets).sum() + 1) / (p.sum() + targets.sum() + 1)
    assert torch.allclose(dice_loss(logits, targets), expected)
    assert dice_loss(torch.tensor([[50.0, -50.0]]), torch.tensor([[1.0, 0.0]])) < 1e-6


def test_mask_costs_equal_pairwise_losses():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 30, generator=g)
    targets = (torch.rand(3, 30, generator=g) > 0.5).float()
    bce, dice = mask_costs(logits, targets)
    for q in range(5):
        for t in range(3):
            ref = F.binary_cross_entropy_with_logits(logits[q], targets[t])
            assert torch.allclose(bce[q, t], ref, atol=1e-5)
            assert torch.allclose(dice[q, t], dice_loss(logits[q:q + 1], targets[t:t + 1]), atol=1e-5)


def test_hungarian_finds_the_optimal_assignment():
    cost = torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0], [0.5, 9.0, 9.0]])
    rows, cols = hungarian(cost)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(1, 1), (2, 2), (3, 0)]


def test_match_queries_pairs_each_target_with_its_mask():
    targets = torch.zeros(2, 16, 16, dtype=torch.bool)
    targets[0, :8, :8] = True
    targets[1, 8:, 8:] = True
    small = downsample_targets(targets, (4, 4))
    logits = torch.full((4, 4, 4), -8.0)
    logits[2, 2:, 2:] = 8.0  # query 2 predicts target 1
    logits[0, :2, :2] = 8.0  # query 0 predicts target 0
    q, t = match_queries(logits, None, small, torch.tensor([0, 1]), 0.0, 5.0, 5.0)
    assert dict(zip(t.tolist(), q.tolist())) == {0: 0, 1: 2}
    bce, dice = full_mask_loss(logits[[0, 2]], targets)
    assert dice < 0.05 and bce < 0.05


def test_class_loss_weights_no_object():
    logits = torch.zeros(3, 4)
    loss = class_loss(logits, np.array([1]), torch.tensor([2]), no_object_weight=0.1)
    # uniform logits: every sample has CE log(4); the weighted mean is log(4) whatever the weights
    assert torch.allclose(loss, torch.tensor(np.log(4.0), dtype=torch.float32))
    logits[1, 2] = 5.0  # the matched query is right: only the two "no object" queries lose
    loss = class_loss(logits, np.array([1]), torch.tensor([2]), no_object_weight=0.1)
    right = F.cross_entropy(logits[1:2], torch.tensor([2]))
    expected = (1.0 * right + 0.1 * 2 * np.log(4.0)) / 1.2
    assert torch.allclose(loss, expected.float(), atol=1e-6)


def test_weighted_mask_losses_ignore_zero_weight_pixels():
    targets = torch.zeros(1, 16, 16, dtype=torch.bool)
    targets[0, :8, :8] = True
    logits = torch.full((1, 4, 4), -8.0)
    logits[0, :2, :2] = 8.0          # the target, right
    logits[0, 3, 3] = 8.0            # a look-alike far away, wrong
    weights = torch.ones(1, 16, 16)
    plain = full_mask_loss(logits, targets)
    assert plain[1] > 0.05
    weights[0, 12:, 12:] = 0.0       # ... ignored
    bce, dice = full_mask_loss(logits, targets, weights)
    assert dice < 0.05 and bce < plain[0]
    ones = full_mask_loss(logits, targets, torch.ones(1, 16, 16))
    assert torch.allclose(ones[0], plain[0]) and torch.allclose(ones[1], plain[1])


def _pixel_centre_coords(size, padded):
    """Grid coordinates of every pixel centre of an image ``size`` in a padded frame."""
    ys, xs = np.mgrid[: size[0], : size[1]] + 0.5
    coords = np.stack([2 * xs / padded[1] - 1, 2 * ys / padded[0] - 1], -1).reshape(1, -1, 2)
    return torch.from_numpy(coords).float()


def test_points_sample_the_upsampled_logits_and_the_targets_pixels():
    # a 30 x 26 image padded to 32 x 32: logits at 8 x 8
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 8, 8, generator=g)
    coords = _pixel_centre_coords((30, 26), (32, 32))
    up = upsample(logits, (30, 26))
    assert torch.allclose(sample_points(logits, coords)[0], up.flatten(), atol=1e-5)
    targets = torch.rand(1, 30, 26, generator=g)
    target_coords = _pixel_centre_coords((30, 26), (30, 26))
    assert torch.allclose(sample_points(targets, target_coords)[0], targets.flatten(), atol=1e-5)
    assert torch.equal(sample_points(targets, target_coords, mode="nearest")[0], targets.flatten())


def test_uncertain_points_fall_in_the_image_and_mostly_on_the_outline():
    logits = torch.full((2, 16, 16), -10.0)
    logits[:, 4:8, 4:8] = 10.0
    logits[:, 4:8, 8] = 0.0                      # the least certain cells: a column at the outline
    logits[:, 4:8, 3] = 0.5
    coords = uncertain_points(logits, 40, (50, 40), torch.Generator().manual_seed(1))
    assert coords.shape == (2, 40, 2)
    pixels = (coords + 1) / 2 * torch.tensor([64.0, 64.0])  # x, y in image pixels
    assert (pixels >= 0).all() and (pixels[..., 0] < 40).all() and (pixels[..., 1] < 50).all()
    cells = (pixels // 4).long()
    uncertain = ((cells[..., 0] == 8) | (cells[..., 0] == 3)) & (cells[..., 1] >= 4) & (cells[..., 1] < 8)
    n_uncertain = int(0.75 * 40) // 3 * 3       # the 10 least certain cells x 3 points: 8 of them are
    assert uncertain[:, :n_uncertain].sum(1).eq(8 * 3).all()     # on the outline, 2 anywhere
    n_uncertain = 8 * 3
    # the rest are uniform over the image (not only the uncertain cells)
    assert (~uncertain[:, n_uncertain:]).any(dim=1).all()


def test_point_mask_loss_agrees_with_the_full_loss():
    targets = torch.zeros(2, 64, 60, dtype=torch.bool)
    targets[0, 10:40, 8:30] = True
    targets[1, 30:60, 30:58] = True
    right = torch.full((2, 16, 16), -6.0)
    right[0, 2:10, 2:8] = 6.0
    right[1, 8:15, 8:15] = 6.0
    wrong = -right
    g = torch.Generator().manual_seed(0)
    bce_r, dice_r = point_mask_loss(right, targets, 2048, g)
    bce_w, dice_w = point_mask_loss(wrong, targets, 2048, g)
    assert dice_r < 0.2 and dice_w > 0.9 and bce_w > 5 * bce_r
    # uniform-noise logits: the point loss estimates the full-resolution loss
    noisy = torch.randn(2, 16, 16, generator=g)
    full_bce, full_dice = full_mask_loss(noisy, targets)
    bce, dice = point_mask_loss(noisy, targets, 4096, g)
    assert abs(float(bce - full_bce)) < 0.15 * float(full_bce)
    assert abs(float(dice - full_dice)) < 0.15 * float(full_dice)
    # gradients reach the logits; no points for no masks
    noisy.requires_grad_(True)
    sum(point_mask_loss(noisy, targets, 512, g)).backward()
    assert noisy.grad.abs().sum() > 0
    empty = point_mask_loss(noisy[:0], targets[:0], 512, g)
    assert float(empty[0].detach()) == 0.0 and float(empty[1].detach()) == 0.0


def test_point_mask_loss_ignores_zero_weight_pixels():
    targets = torch.zeros(1, 16, 16, dtype=torch.bool)
    targets[0, :8, :8] = True
    logits = torch.full((1, 4, 4), -8.0)
    logits[0, :2, :2] = 8.0
    logits[0, 3, 3] = 8.0                        # a look-alike far away, wrong
    weights = torch.ones(1, 16, 16)
    plain = point_mask_loss(logits, targets, 256, torch.Generator().manual_seed(2))
    weights[0, 12:, 12:] = 0.0
    bce, dice = point_mask_loss(logits, targets, 256, torch.Generator().manual_seed(2), weights)  # same points
    assert dice < plain[1] and bce < plain[0]


def test_half_resolution_loss_compares_2x_upsampled_logits_with_area_averaged_targets():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 8, 8, generator=g, requires_grad=True)
    targets = torch.rand(2, 30, 26, generator=g) > 0.5       # a 30 x 26 image padded to 32 x 32
    bce, dice = full_mask_loss(logits, targets, stride=2)
    up = F.interpolate(logits.detach()[None], size=(16, 16), mode="bilinear", align_corners=False)[0, :, :15, :13]
    soft = F.avg_pool2d(F.pad(targets.float(), (0, 6, 0, 2))[None], 2)[0, :, :15, :13]
    expected_bce = F.binary_cross_entropy_with_logits(up, soft, reduction="none").flatten(1).mean(1).mean()
    assert torch.allclose(bce, expected_bce, atol=1e-6)
    assert torch.allclose(dice, dice_loss(up.flatten(1), soft.flatten(1)), atol=1e-6)
    (bce + dice).backward()
    assert logits.grad.abs().sum() > 0
    # right and wrong masks are told apart as at full resolution
    right = torch.full((1, 4, 4), -8.0)
    right[0, :2, :2] = 8.0
    square = torch.zeros(1, 16, 16, dtype=torch.bool)
    square[0, :8, :8] = True
    assert full_mask_loss(right, square, stride=2)[1] < 0.05 < full_mask_loss(-right, square, stride=2)[1]
    with pytest.raises(ValueError, match="stride"):
        full_mask_loss(logits, targets, stride=3)


def test_pooled_targets_average_only_the_counted_pixels():
    targets = torch.tensor([[[1, 0], [1, 1]]], dtype=torch.bool)
    weights = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])        # the bottom row is ignored
    soft, block = pool_targets(targets, (2, 2), 2, weights)
    assert torch.allclose(soft, torch.tensor([[[0.5]]])) and torch.allclose(block, torch.tensor([[[0.5]]]))
    # at half resolution too, targets under zero weight do not change the loss
    logits = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(4))
    square = torch.zeros(1, 16, 16, dtype=torch.bool)
    square[0, :8, :8] = True
    ignore = torch.ones(1, 16, 16)
    ignore[0, 10:, 10:] = 0.0
    other = square.clone()
    other[0, 12:, 12:] = True                                   # an object where the weights are 0
    a = full_mask_loss(logits, square, ignore, stride=2)
    b = full_mask_loss(logits, other, ignore, stride=2)
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    assert not torch.allclose(full_mask_loss(logits, other, stride=2)[1], a[1])


@pytest.mark.parametrize("stride", [1, 2])
def test_emphasis_weights_the_bce_of_the_emphasised_pixels_only(stride):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 4, generator=g)
    targets = torch.rand(2, 16, 16, generator=g) > 0.5
    plain = full_mask_loss(logits, targets, stride=stride)
    # uniform emphasis changes nothing (the BCE is a weighted mean)
    same = full_mask_loss(logits, targets, stride=stride, emphasis=torch.full((2, 16, 16), 3.0))
    assert torch.allclose(same[0], plain[0], atol=1e-6) and torch.allclose(same[1], plain[1])
    # emphasis on a region: the BCE is the weighted mean, the dice is untouched
    emphasis = torch.ones(2, 16, 16)
    emphasis[:, :8, :8] = 5.0
    bce, dice = full_mask_loss(logits, targets, stride=stride, emphasis=emphasis)
    assert torch.allclose(dice, plain[1])
    size = 16 // stride
    up = upsample(logits, (size, size), 4 // stride).flatten(1)
    soft = F.avg_pool2d(targets.float()[None], stride)[0].flatten(1)
    e = F.avg_pool2d(emphasis[None], stride)[0].flatten(1)
    per_pixel = F.binary_cross_entropy_with_logits(up, soft, reduction="none")
    assert torch.allclose(bce, ((per_pixel * e).sum(1) / e.sum(1)).mean(), atol=1e-6)
    # ignored pixels stay ignored under emphasis
    ignore = torch.ones(2, 16, 16)
    ignore[:, 8:, 8:] = 0.0
    other = targets.clone()
    other[:, 8:, 8:] = ~other[:, 8:, 8:]
    a = full_mask_loss(logits, targets, ignore, stride, emphasis)
    b = full_mask_loss(logits, other, ignore, stride, emphasis)
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_point_loss_emphasis_weights_the_bce_only():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 4, 4, generator=g)
    targets = torch.rand(1, 16, 16, generator=g) > 0.5
    emphasis = torch.ones(1, 16, 16)
    emphasis[:, :8] = 9.0
    plain = point_mask_loss(logits, targets, 64, torch.Generator().manual_seed(1))
    both = point_mask_loss(logits, targets, 64, torch.Generator().manual_seed(1), emphasis=emphasis)
    assert torch.allclose(both[1], plain[1]) and not torch.allclose(both[0], plain[0])


@pytest.mark.parametrize("width", [1, 2])
def test_boundary_band_marks_the_pixels_near_the_outline(width):
    from scipy import ndimage

    targets = torch.zeros(2, 24, 24, dtype=torch.bool)
    targets[0, 6:16, 8:20] = True
    targets[1, :5, :5] = True  # at the image's corner: no band along the image's edge
    band = boundary_band(targets, width)
    square = np.ones((2 * width + 1,) * 2, bool)
    for t, b in zip(targets.numpy(), band.numpy()):
        grown = ndimage.binary_dilation(t, square)
        shrunk = ndimage.binary_erosion(t, square, border_value=1)
        assert np.array_equal(b.astype(bool), grown & ~shrunk)
    assert set(np.unique(band.numpy())) == {0.0, 1.0}
    assert band[1, 0, 0] == 0 and band[1, 4, 4] == 1


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_targets_prepared_once_give_every_stage_the_same_loss_bit_for_bit(stride):
    """Training prepares a task's targets once for all decoder stages and selects each stage's
    matched rows: the same numbers, bit for bit, as bringing the selected masks to the loss's
    resolution at every stage (the shipped weights are reproducible byte for byte)."""
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(5, 6, 5, generator=g)  # a 24 x 20 padded image
    targets = torch.rand(4, 22, 19, generator=g) > 0.6  # the unpadded image
    weights = (torch.rand(4, 22, 19, generator=g) > 0.2).float()
    emphasis = 1 + 4 * boundary_band(targets, 1)
    prepared = prepare_masks(targets, (24, 20), weights, stride, emphasis)
    assert len(prepared) == 4 and prepared.size == (-(-22 // stride), -(-19 // stride))
    for q, t in (([0, 3, 1], [2, 0, 3]), ([4], [1]), ([], [])):
        once = prepared_mask_loss(logits[q], prepared[t])
        each = full_mask_loss(logits[q], targets[t], weights[t], stride, emphasis[t])
        assert torch.equal(once[0], each[0]) and torch.equal(once[1], each[1])
    unweighted = prepare_masks(targets, (24, 20), stride=stride)
    assert unweighted.weights is None and unweighted.bce_weights is None
    assert torch.equal(prepared_mask_loss(logits[:4], unweighted)[0], full_mask_loss(logits[:4], targets, stride=stride)[0])
    with pytest.raises(ValueError, match="stride"):
        prepare_masks(targets, (24, 20), stride=3)
