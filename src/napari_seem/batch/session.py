"""Re-run a napari-seem session's prompt in batch (``--session cells.seem``).

A session folder (:mod:`napari_seem.io.session`) records, on its SEEM output layer, the model and
the last action of the widget (``metadata["napari_seem"]``). What batch can replay from it:

- a **text** prompt (``text`` set): every object of that class, named with the session vocabulary;
- **segment everything** (``action``): automatic segmentation with the session vocabulary;
- **find similar**: the session does not store the reference object, so this needs
  ``--exemplar-image`` / ``--exemplar-mask`` (an error says so);
- **propagate** / clicks: their seeds are per-image and are not replayed (an error says so).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .spec import PromptSpec

INDEX = "session.json"


def session_settings(path: str | Path) -> dict[str, Any]:
    """The ``seem`` entry of a session folder's index (model, device, vocabulary, last action)."""
    from ..io.session import FORMAT

    folder = Path(path).expanduser()
    index_path = folder / INDEX
    if not index_path.is_file():
        raise ValueError(f"{folder} is not a napari-seem session folder (no {INDEX})")
    try:
        index = json.loads(index_path.read_text())
    except ValueError as exc:
        raise ValueError(f"{index_path} is not valid JSON: {exc}") from exc
    if index.get("format") != FORMAT:
        raise ValueError(f"{folder} is not a napari-seem session (format {index.get('format')!r})")
    settings = index.get("seem") or {}
    if not settings:
        raise ValueError(f"session {folder} holds no SEEM result to re-run (segment something in napari and save again)")
    return settings


def session_scale(path: str | Path) -> float | None:
    """The scale (model pixels per image pixel) the session's objects were made at, or None."""
    scale = session_settings(path).get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        return None
    return float(scale)


def prompt_from_session(path: str | Path) -> tuple[PromptSpec, str | None]:
    """The session's prompt and its model (preset name, checkpoint path, or None if not recorded).

    Raises:
        ValueError: not a session, or its last action cannot be replayed without more input.
    """
    settings = session_settings(path)
    vocabulary = tuple(settings.get("vocabulary") or ()) or None
    model = settings.get("model")
    model = None if model in (None, "", "custom") else str(model)
    text = (settings.get("text") or "").strip()
    action = settings.get("action")
    if text:
        return PromptSpec("text", text=text, vocabulary=vocabulary), model
    if action == "segment everything":
        if vocabulary is None:
            raise ValueError(f"session {path} records 'segment everything' but no vocabulary")
        return PromptSpec("vocabulary", vocabulary=vocabulary), model
    if action == "find similar":
        raise ValueError(f"session {path} used 'find similar', but sessions do not store the reference object: "
                         "give --exemplar-image and --exemplar-mask instead")
    if action == "propagate":
        raise ValueError(f"session {path} used 'propagate', whose seeds belong to that image: give --seed-labels "
                         "(a label image of the start frame) or --seed-point instead")
    raise ValueError(f"session {path} has no text prompt or vocabulary action to re-run "
                     f"(last action: {action or 'clicks / shapes'}); clicks are specific to one image")
