"""Viewer keyboard shortcuts of the SEEM widget (bound while the widget exists)."""
from __future__ import annotations

import weakref

#: key -> (widget method, description). Shift combinations do not clash with napari's layer keys.
SHORTCUTS: dict[str, tuple[str, str]] = {
    "Shift-S": ("segment", "Segment the prompted objects"),
    "Shift-N": ("accept", "Accept the objects and start the next one (clears the prompts)"),
    "Shift-T": ("toggle_polarity", "Toggle positive/negative clicks (selected points, or the next ones)"),
    "Shift-P": ("propagate", "Propagate the objects of this slice through z/t"),
}


def install_shortcuts(viewer, widget) -> None:
    """Bind :data:`SHORTCUTS` on ``viewer`` to ``widget``'s methods (the widget is held weakly)."""
    ref = weakref.ref(widget)

    def make(method: str):
        def handler(_viewer):
            target = ref()
            if target is not None:
                getattr(target, method)()

        handler.__doc__ = SHORTCUTS_DOC.get(method, method)
        return handler

    for key, (method, _) in SHORTCUTS.items():
        viewer.bind_key(key, make(method), overwrite=True)


def remove_shortcuts(viewer) -> None:
    """Unbind :data:`SHORTCUTS` from ``viewer``."""
    for key in SHORTCUTS:
        if key in viewer.keymap:
            viewer.bind_key(key, None)


SHORTCUTS_DOC = {method: text for method, text in SHORTCUTS.values()}


def shortcut_for(method: str) -> str:
    """The key bound to a widget method, e.g. ``"Shift-S"`` for ``"segment"``."""
    return next(key for key, (name, _) in SHORTCUTS.items() if name == method)
