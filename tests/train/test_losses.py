import numpy as np
import torch
import torch.nn.functional as F

from napari_seem.train.losses import (
    class_loss, dice_loss, downsample_targets, full_mask_loss, hungarian, mask_costs, match_queries,
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
