"""The official SEEM reference data in ``../shared/seem_reference`` (paths and loaders for tests).

A module of its own (not ``conftest``) so test files import it unambiguously:
``from golden import GOLDEN_DIR, load_case, sub_state_dict``.
"""
from __future__ import annotations

from pathlib import Path

import torch

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "seem_reference"
GOLDEN_DIR = REFERENCE_DIR / "golden"
SPEC_DIR = REFERENCE_DIR / "spec"


def load_case(name: str) -> dict:
    """Load ``golden/case_<name>.pt`` (plain dict of tensors) with weights_only=True."""
    return torch.load(GOLDEN_DIR / f"case_{name}.pt", weights_only=True)


def sub_state_dict(state_dict: dict, prefix: str, exclude: str | None = None) -> dict:
    """Entries under ``prefix`` with the prefix stripped (optionally excluding a sub-prefix)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith(prefix) and not (exclude and k.startswith(exclude)):
            out[k[len(prefix):]] = v
    return out
