"""Shared test fixtures: the official SEEM reference data in ``../shared/seem_reference``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "seem_reference"
GOLDEN_DIR = REFERENCE_DIR / "golden"
SPEC_DIR = REFERENCE_DIR / "spec"


def load_case(name: str) -> dict:
    """Load ``golden/case_<name>.pt`` (plain dict of tensors) with weights_only=True."""
    return torch.load(GOLDEN_DIR / f"case_{name}.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN_DIR.is_dir():
        pytest.fail(f"SEEM reference data not found at {GOLDEN_DIR}")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    return SPEC_DIR


@pytest.fixture(scope="session")
def tiny_state_dict(golden_dir) -> dict:
    """Official tiny SEEM v1 weights (280 entries, official names, no ``model.`` prefix)."""
    return torch.load(golden_dir / "tiny_v1_weights.pt", weights_only=True)


@pytest.fixture(scope="session")
def tiny_yaml(golden_dir) -> Path:
    return golden_dir / "tiny_v1.yaml"


def sub_state_dict(state_dict: dict, prefix: str, exclude: str | None = None) -> dict:
    """Entries under ``prefix`` with the prefix stripped (optionally excluding a sub-prefix)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith(prefix) and not (exclude and k.startswith(exclude)):
            out[k[len(prefix):]] = v
    return out
