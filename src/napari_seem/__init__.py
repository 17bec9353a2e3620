"""napari-seem: SEEM (Segment Everything Everywhere All at Once) for napari and scripts.

Scripting entry points (imported lazily so that napari starts fast)::

    import napari_seem
    seg = napari_seem.Segmenter.from_pretrained("seem_focalt_v1")
    seg.set_image(image)
    result = seg.predict(napari_seem.ObjectPrompt(points=[(40, 52)]))
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Segmenter": "napari_seem.engine",
    "ObjectPrompt": "napari_seem.engine",
    "Segmentation": "napari_seem.engine",
    "Vocabulary": "napari_seem.engine",
    "build_seem": "napari_seem.model",
    "from_pretrained": "napari_seem.model",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_seem' has no attribute {name!r}")
