"""Finding, downloading and loading SEEM checkpoints safely.

Official checkpoints (Hugging Face repo ``xdecoder/SEEM``) are flat state dicts whose names
have no ``model.`` prefix. They are read with ``torch.load(..., weights_only=True)`` (a
checkpoint can never run code) or from ``.safetensors``. Every name that does not fit the model
(missing, unexpected, wrong shape) is reported by name; nothing is dropped silently.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

HF_REPO_ID = "xdecoder/SEEM"
#: Directory searched for official checkpoint files before any download.
CHECKPOINT_DIR_ENV = "NAPARI_SEEM_CHECKPOINT_DIR"
#: Entries that the official loader tolerates being absent (training-only or constant buffers).
OPTIONAL_KEYS = frozenset({"criterion.empty_weight", "dilation_kernel"})
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "model.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (unreadable, corrupted or of another architecture)."""


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint that is neither on disk nor downloadable now (e.g. no network)."""


def checkpoint_search_dirs() -> list[Path]:
    """Directories searched for ``<file name>`` of a preset, in order."""
    dirs = []
    if os.environ.get(CHECKPOINT_DIR_ENV):
        dirs.append(Path(os.environ[CHECKPOINT_DIR_ENV]).expanduser())
    dirs.append(Path.home() / ".cache" / "napari-seem")
    return dirs


def find_local_checkpoint(filename: str) -> Path | None:
    """Return a local copy of an official checkpoint file (``.pt`` or converted ``.safetensors``)."""
    stem = Path(filename).stem
    for folder in checkpoint_search_dirs():
        for candidate in (folder / filename, folder / f"{stem}.safetensors"):
            if candidate.is_file():
                return candidate
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    cached = try_to_load_from_cache(HF_REPO_ID, filename)
    return Path(cached) if isinstance(cached, str) else None


def download_checkpoint(filename: str) -> Path:
    """Download ``filename`` from ``xdecoder/SEEM`` (progress shown by huggingface_hub).

    Raises:
        CheckpointNotFoundError: no network, blocked host or missing file; the message says which
            file is needed and where to put it.
    """
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=HF_REPO_ID, filename=filename))
    except Exception as err:  # network errors come in many types (OSError, HTTPError, offline mode)
        target = checkpoint_search_dirs()[0]
        raise CheckpointNotFoundError(
            f"could not download SEEM checkpoint {filename!r} from https://huggingface.co/{HF_REPO_ID} "
            f"({type(err).__name__}: {err}). Download it on a machine with internet access and put it at "
            f"{target / filename} (or set {CHECKPOINT_DIR_ENV} to the folder that holds it)."
        ) from err


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat ``name -> tensor`` dict on the CPU, without running code.

    Accepts official flat state dicts, ``{"model": ...}``/``{"state_dict": ...}`` wrappers and a
    common ``model.``/``module.`` prefix, in ``.pt``/``.pth`` (``weights_only=True``) or
    ``.safetensors`` files.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {err}. The file may be truncated or "
            "corrupted (delete it and download again), or it holds more than tensors (only plain state "
            "dicts are loaded, so a checkpoint can never run code)."
        ) from err
    return _flatten(raw, path)


def _flatten(raw: object, path: Path) -> dict[str, Tensor]:
    for key in _WRAPPER_KEYS:
        if isinstance(raw, Mapping) and isinstance(raw.get(key), Mapping):
            raw = raw[key]
            break
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{path} holds no state dict (found {type(raw).__name__})")
    tensors = {k: v for k, v in raw.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a model."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        lines = [f"{len(self.loaded)} tensors loaded"]
        for title, items in (("missing from the checkpoint", self.missing),
                             ("not used by the model", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
                lines.append(f"{title}: {shown}")
        if self.mismatched:
            shown = ", ".join(f"{n} (checkpoint {tuple(c)} vs model {tuple(m)})" for n, c, m in self.mismatched[:limit])
            lines.append(f"shape mismatch: {shown}")
        return "; ".join(lines)


def load_into(model: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True) -> LoadReport:
    """Copy ``state_dict`` into ``model`` by official name and report every name that does not fit.

    With ``strict=True`` (default) any missing (except :data:`OPTIONAL_KEYS`), unexpected or
    mis-shaped entry raises :class:`CheckpointError` naming them, before anything is copied.
    With ``strict=False`` the matching entries are loaded and the report lists the rest.
    """
    own = model.state_dict()
    report = LoadReport()
    usable = {}
    for name, tensor in state_dict.items():
        if name not in own:
            report.unexpected.append(name)
        elif tuple(tensor.shape) != tuple(own[name].shape):
            report.mismatched.append((name, tuple(tensor.shape), tuple(own[name].shape)))
        else:
            usable[name] = tensor
    report.missing = [n for n in own if n not in state_dict and n not in OPTIONAL_KEYS]
    if strict and not report.ok:
        raise CheckpointError(
            "checkpoint does not match the model architecture (is the config right for this file?): "
            + report.summary()
        )
    model.load_state_dict(usable, strict=False)
    report.loaded = list(usable)
    return report


def save_safetensors(model_or_state: nn.Module | Mapping[str, Tensor], path: str | Path) -> Path:
    """Write a state dict as ``.safetensors`` (contiguous copies; tied tensors are duplicated)."""
    from safetensors.torch import save_file

    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    path = Path(path)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(path))
    return path


def guess_preset(state_dict: Mapping[str, Tensor]) -> str | None:
    """Name of the preset whose architecture fits these official names/shapes, if one does."""
    patch = state_dict.get("backbone.patch_embed.proj.weight")
    if patch is None:
        return None
    width = patch.shape[0]
    if "backbone.pos_embed" in state_dict:  # SAM ViT
        return {768: "seem_samvitb_v1", 1024: "seem_samvitl_v1"}.get(width)
    return {96: "seem_focalt_v1", 192: "seem_focall_v1"}.get(width)
