import numpy as np

from napari_seem.train.clicks import centre_click, next_click, perturbed_mask, random_click, random_stroke


def _disc(shape, centre, radius):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius ** 2


def test_centre_click_is_the_deepest_pixel():
    assert centre_click(_disc((40, 40), (12, 25), 6)) == (12, 25)


def test_next_click_goes_to_the_largest_error():
    gt = _disc((60, 60), (30, 30), 12)
    missed = gt & ~_disc((60, 60), (30, 22), 8)  # the right part of the object is missing
    (r, c), label = next_click(missed, gt)
    assert label == 1 and gt[r, c] and not missed[r, c]
    extra = gt | _disc((60, 60), (8, 50), 6)  # a false blob in the corner
    (r, c), label = next_click(extra, gt)
    assert label == 0 and (r, c) == (8, 50)
    assert next_click(gt, gt) is None


def test_random_prompts_stay_inside_and_are_deterministic():
    mask = _disc((50, 50), (25, 25), 10)
    a = [random_click(mask, np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1] and mask[a[0]]
    stroke = random_stroke(mask, np.random.default_rng(1))
    assert stroke is not None and all(mask[int(r), int(c)] for r, c in stroke)
    moved = perturbed_mask(mask, np.random.default_rng(2))
    assert np.array_equal(moved, perturbed_mask(mask, np.random.default_rng(2)))
    assert moved.any() and abs(int(moved.sum()) - int(mask.sum())) < mask.sum()
