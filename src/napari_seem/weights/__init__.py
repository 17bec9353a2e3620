"""Weights shipped inside the package (small models that work offline).

``seem_tiny_synthetic``: SEEM v1 with the official architecture at shrunk dimensions, trained by
``python -m napari_seem.train`` on synthetic fluorescence microscopy (see ``MODEL_CARD.md``), and
the outline refiners trained on its masks of nuclei (``seem_tiny_synthetic_refiner``) and of cells
(``seem_tiny_synthetic_cell_refiner``).
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent

#: shipped model name -> (weights file, config file), relative to this folder
SHIPPED_MODELS: dict[str, tuple[str, str]] = {
    "seem_tiny_synthetic": ("seem_tiny_synthetic.safetensors", "seem_tiny_synthetic.yaml"),
}

#: shipped model name -> its outline refiners' weights (``napari_seem.engine.outline_refiner``)
SHIPPED_REFINERS: dict[str, tuple[str, ...]] = {
    "seem_tiny_synthetic": ("seem_tiny_synthetic_refiner.safetensors", "seem_tiny_synthetic_cell_refiner.safetensors"),
}

#: class names each shipped model was trained on (its natural vocabulary)
SHIPPED_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "seem_tiny_synthetic": ("nucleus", "cell", "vesicle"),
}


def shipped_model_names() -> list[str]:
    """Names of the models whose weights are in the package."""
    return [name for name in SHIPPED_MODELS if (_HERE / SHIPPED_MODELS[name][0]).is_file()]


def shipped_model_path(name: str) -> tuple[Path, Path]:
    """``(weights_path, config_path)`` of a shipped model.

    Raises:
        KeyError: ``name`` is not a shipped model.
        FileNotFoundError: its weights are missing from this installation.
    """
    if name not in SHIPPED_MODELS:
        raise KeyError(f"{name!r} is not a shipped model ({', '.join(SHIPPED_MODELS)})")
    weights, config = (_HERE / f for f in SHIPPED_MODELS[name])
    if not weights.is_file():
        raise FileNotFoundError(f"the weights of {name!r} are missing: {weights}")
    return weights, config


def load_shipped_model(name: str = "seem_tiny_synthetic"):
    """The shipped model ``name`` as a ready :class:`~napari_seem.model.SEEM` (fp32, CPU, eval mode)."""
    from ..model import build_seem, load_into, read_state_dict

    weights, config = shipped_model_path(name)
    model = build_seem(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(weights).items()}
    load_into(model, state, strict=True)
    return model.eval()


def load_shipped_refiners(name: str = "seem_tiny_synthetic") -> list:
    """The outline refiners shipped for model ``name`` (each an
    :class:`~napari_seem.engine.outline_refiner.OutlineRefiner`, fp32, eval mode), those in this
    installation; an empty list for a model without any."""
    from ..engine.outline_refiner import load_refiner

    files = [_HERE / f for f in SHIPPED_REFINERS.get(name, ())]
    return [load_refiner(f) for f in files if f.is_file()]


def load_shipped_refiner(name: str = "seem_tiny_synthetic", class_name: str = "nucleus"):
    """The outline refiner shipped for model ``name`` that draws objects named ``class_name``, or
    None when there is none in this installation."""
    return next((r for r in load_shipped_refiners(name) if class_name in r.classes), None)


def model_refiner(name_or_path: str | Path) -> list | None:
    """The outline refiners a model comes with: a shipped model's own
    (:func:`load_shipped_refiners`), the ``refiner*.safetensors`` files beside a training run's
    weights file (``python -m napari_seem.train --refiner``), else None."""
    from ..engine.outline_refiner import refiner_files, load_refiner

    if str(name_or_path) in SHIPPED_REFINERS:
        return load_shipped_refiners(str(name_or_path)) or None
    path = Path(str(name_or_path))
    beside = refiner_files(path.parent) if path.is_file() else []
    return [load_refiner(f) for f in beside] or None
