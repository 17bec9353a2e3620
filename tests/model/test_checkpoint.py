"""Checkpoint resolution and loading: strict names, safe unpickling, clear errors."""
import json
import pickle

import pytest
import torch

from napari_seem.model import CheckpointError, CheckpointNotFoundError, build_seem, from_pretrained, load_into, read_state_dict
from napari_seem.model.checkpoint import guess_preset, save_safetensors
from napari_seem.model.config import PRESETS


@pytest.fixture(scope="module")
def tiny_model(tiny_yaml):
    return build_seem(tiny_yaml)


def test_tiny_golden_weights_load_strictly(tiny_model, tiny_state_dict):
    report = load_into(tiny_model, tiny_state_dict, strict=True)
    assert report.ok and len(report.loaded) == len(tiny_state_dict) == 280
    own = tiny_model.state_dict()
    for name, tensor in tiny_state_dict.items():
        assert torch.equal(own[name], tensor), name


def test_from_pretrained_file_with_config(tmp_path, tiny_yaml, tiny_state_dict):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_state_dict, path)
    model = from_pretrained(path, config=tiny_yaml)
    assert torch.equal(model.state_dict()["backbone.patch_embed.proj.weight"], tiny_state_dict["backbone.patch_embed.proj.weight"])
    assert not model.training


def test_wrapped_and_prefixed_checkpoint(tmp_path, tiny_yaml, tiny_state_dict):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": {f"model.{k}": v for k, v in tiny_state_dict.items()}, "epoch": 3}, path)
    state = read_state_dict(path)
    assert set(state) == set(tiny_state_dict)


def test_safetensors_round_trip(tmp_path, tiny_model, tiny_yaml, tiny_state_dict):
    load_into(tiny_model, tiny_state_dict)
    path = save_safetensors(tiny_model, tmp_path / "tiny.safetensors")
    model = from_pretrained(path, config=tiny_yaml)
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_mismatches_are_named(tiny_model, tiny_state_dict):
    state = dict(tiny_state_dict)
    del state["sem_seg_head.predictor.query_feat.weight"]
    state["sem_seg_head.predictor.not_a_layer"] = torch.zeros(1)
    state["backbone.norm0.weight"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as err:
        load_into(tiny_model, state, strict=True)
    msg = str(err.value)
    assert "sem_seg_head.predictor.query_feat.weight" in msg
    assert "sem_seg_head.predictor.not_a_layer" in msg
    assert "backbone.norm0.weight" in msg and "(5,)" in msg
    report = load_into(tiny_model, state, strict=False)
    assert report.missing == ["sem_seg_head.predictor.query_feat.weight"]
    assert report.unexpected == ["sem_seg_head.predictor.not_a_layer"]
    assert [m[0] for m in report.mismatched] == ["backbone.norm0.weight"]


def test_optional_buffers_may_be_absent(tiny_model, tiny_state_dict):
    state = {k: v for k, v in tiny_state_dict.items() if k not in ("criterion.empty_weight", "dilation_kernel")}
    assert load_into(tiny_model, state, strict=True).ok


def test_corrupted_checkpoint(tmp_path, tiny_state_dict):
    path = tmp_path / "broken.pt"
    torch.save(tiny_state_dict, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupted"):
        read_state_dict(path)


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not (tmp_path / "PWNED").exists()


def test_missing_file_and_unknown_name():
    with pytest.raises(FileNotFoundError, match="neither a SEEM model"):
        from_pretrained("no_such_model")
    with pytest.raises(CheckpointNotFoundError):
        read_state_dict("/nonexistent/seem.pt")


def test_offline_download_names_file_and_place(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("NAPARI_SEEM_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CheckpointNotFoundError) as err:
        from_pretrained("seem_focalt_v1")
    msg = str(err.value)
    assert "seem_focalt_v1.pt" in msg and str(tmp_path / "ckpts") in msg


def test_local_checkpoint_dir_is_used(tmp_path, monkeypatch, tiny_state_dict, tiny_yaml):
    monkeypatch.setenv("NAPARI_SEEM_CHECKPOINT_DIR", str(tmp_path))
    torch.save(tiny_state_dict, tmp_path / "seem_focalt_v1.pt")
    model = from_pretrained("seem_focalt_v1", config=tiny_yaml)
    assert torch.equal(model.state_dict()["backbone.norm0.bias"], tiny_state_dict["backbone.norm0.bias"])


@pytest.mark.parametrize("preset", ["seem_focalt_v1", "seem_focall_v1", "seem_samvitb_v1", "seem_samvitl_v1"])
def test_guess_preset_from_spec_shapes(preset, spec_dir):
    spec_name = {"seem_focalt_v1": "focalt_unicl_lang_v1", "seem_focall_v1": "focall_unicl_lang_v1",
                 "seem_samvitb_v1": "samvitb_unicl_lang_v1", "seem_samvitl_v1": "samvitl_unicl_lang_v1"}[preset]
    spec = json.loads((spec_dir / f"{spec_name}.json").read_text())
    fake = {e["name"]: torch.empty(e["shape"], device="meta") for e in spec["state_dict"]}
    assert guess_preset(fake) == preset
    assert preset in PRESETS
