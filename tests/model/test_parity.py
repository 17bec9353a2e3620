"""End-to-end parity with the official SEEM implementation: every golden case, from the image.

Each case file holds what the official code produced on the tiny random model; ``run_case``
recomputes every output with our model from the case's inputs. Tolerance 1e-4 absolute (fp32).
"""
import pytest
import torch

from golden import GOLDEN_DIR, load_case
from napari_seem.model import build_seem, load_into, winograd
from napari_seem.model.parity import case_kind, run_case

TOL = 1e-4
CASES = sorted(p.stem[len("case_"):] for p in GOLDEN_DIR.glob("case_*.pt"))
META_KEYS = {"config", "seed", "official_commit", "prompt", "image", "image_a", "image_b", "height", "width",
             "vocab_names", "num_objects", "num_rounds", "strings", "templates", "phrases", "thing_ids",
             "num_classes", "object_mask_threshold", "overlap_threshold", "test_topk_per_image",
             "pixel_mean", "pixel_std", "size_divisibility", "b_status", "prompt_mask_a"}


@pytest.fixture(scope="module")
def model(tiny_yaml, tiny_state_dict):
    m = build_seem(tiny_yaml)
    load_into(m, tiny_state_dict, strict=True)
    return m


def test_all_case_files_found():
    assert len(CASES) == 16, CASES


def _input_keys(case):
    keys = set(META_KEYS)
    # prompts and recorded random draws are inputs of interactive cases
    keys |= {k for k in case if k.endswith(("_pos_mask", "_neg_mask", "_query_sample_idx", "_memory_idx_per_layer"))}
    return keys


def _compare(name, ours, ref):
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, torch.Tensor), name
        assert tuple(ours.shape) == tuple(ref.shape), f"{name}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
        if ref.dtype == torch.bool:
            assert torch.equal(ours.bool(), ref), f"{name}: {(ours.bool() != ref).sum()} pixels differ"
        elif not ref.is_floating_point():
            assert torch.equal(ours.to(ref.dtype), ref), f"{name}: {ours} vs {ref}"
        else:
            err = (ours.float() - ref).abs().max().item() if ref.numel() else 0.0
            assert err < TOL, f"{name}: max abs error {err:.3g}"
    else:
        assert ours == ref, name


@pytest.fixture(params=["direct", "winograd"])
def conv_algorithm(request, monkeypatch):
    """Run each case with the direct 3x3 convolutions and with every one of them as Winograd
    ``F(4x4, 3x3)`` (the tiny model's 64-channel convolutions are below the size where the model
    uses it by itself)."""
    if request.param == "winograd":
        monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
        monkeypatch.setattr(winograd, "MIN_PIXELS", 1)
        calls = []
        original = winograd.conv3x3
        monkeypatch.setattr(winograd, "conv3x3", lambda *a, **k: calls.append(1) or original(*a, **k))
        with winograd.enabled(True):
            yield calls
    else:
        with winograd.enabled(False):
            yield None


@pytest.mark.parametrize("name", CASES)
def test_golden_case(model, name, conv_algorithm):
    case = load_case(name)
    ours = run_case(model, case)
    if conv_algorithm is not None and any(k in case for k in ("image", "image_a")):
        assert conv_algorithm, "the Winograd convolution was not used"
    outputs = [k for k in case if k not in _input_keys(case)]
    assert outputs, f"case {name} has no outputs to compare"
    missing = [k for k in outputs if k not in ours]
    assert not missing, f"run_case did not produce {missing}"
    for key in outputs:
        if key.startswith("instances_") and case_kind(case) == "panoptic":
            continue  # compared below, order-independently
        _compare(f"{name}:{key}", ours[key], case[key])
    if case_kind(case) == "panoptic":
        _compare_instances(ours, case)


def _compare_instances(ours, case):
    """``topk(sorted=False)`` leaves the order implementation-defined: compare as sets."""
    def keyed(d):
        return sorted(zip(d["instances_pred_classes"].tolist(), d["instances_scores"].tolist(),
                          [m.sum().item() for m in d["instances_pred_masks"]]))
    a, b = keyed(ours), keyed(case)
    assert len(a) == len(b)
    for (ca, sa, ma), (cb, sb, mb) in zip(a, b):
        assert ca == cb and abs(sa - sb) < TOL and ma == mb
