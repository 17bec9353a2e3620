"""Every preset reproduces the official state-dict names and shapes exactly."""
import json

import pytest

from napari_seem.model import build_seem, load_config, preset_names

SPEC_OF_PRESET = {
    "seem_focalt_v1": "focalt_unicl_lang_v1",
    "seem_focall_v1": "focall_unicl_lang_v1",
    "seem_samvitb_v1": "samvitb_unicl_lang_v1",
    "seem_samvitl_v1": "samvitl_unicl_lang_v1",
    "seem_focalt_v0": "focalt_unicl_lang_v0",
    "seem_focall_v0": "focall_unicl_lang_v0",
}


def test_every_preset_has_a_spec():
    assert set(preset_names()) == set(SPEC_OF_PRESET)


@pytest.mark.parametrize("preset", sorted(SPEC_OF_PRESET))
def test_preset_state_dict_equals_official_spec(preset, spec_dir):
    spec = json.loads((spec_dir / f"{SPEC_OF_PRESET[preset]}.json").read_text())
    expected = {e["name"]: tuple(e["shape"]) for e in spec["state_dict"]}
    model = build_seem(preset, device="meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing, f"missing {len(missing)}: {missing[:10]}"
    assert not extra, f"extra {len(extra)}: {extra[:10]}"
    wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not wrong, wrong
    assert len(got) == spec["num_entries"]


def test_official_yaml_merges_over_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("MODEL:\n  BACKBONE:\n    FOCAL:\n      EMBED_DIM: 48\n")
    cfg = load_config(path)
    assert cfg["MODEL"]["BACKBONE"]["FOCAL"]["EMBED_DIM"] == 48
    assert cfg["MODEL"]["DECODER"]["HIDDEN_DIM"] == 512


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown SEEM model config"):
        load_config("seem_giant_v9")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: text\n")
    with pytest.raises(ValueError, match="no MODEL section"):
        load_config(bad)
