"""The SEEM dock widget (Plugins -> SEEM).

The widget turns the chosen napari layers into prompts (:mod:`.layers`), runs the engine in a
thread worker (:mod:`.workers`) and writes results into a Labels layer. It holds no model logic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..engine.image import MAX_SCALE
from ..engine.propagate import HOLD_PROBABILITY, TIME_AXIS_LABELS
from ..engine.result import Segmentation
from ..engine.tiles import DEFAULT_OVERLAP
from . import layers as L
from . import workers
from .shortcuts import install_shortcuts, remove_shortcuts, shortcut_for

NONE = "(none)"
NEW_LAYER = "(new layer)"
DEVICES = ("auto", "cpu", "cuda", "mps")
DIRECTIONS = ("forward", "backward", "both")
POINT_COLORS = {"positive": "lime", "negative": "magenta"}
METADATA_KEY = "napari_seem"
PROGRESS_INTERVAL_MS = 250
TILE_CHOICES = ("off", "auto", "256", "512", "1024")
SCALE_CHOICES = ("auto", "0.25", "0.5", "0.75", "1", "1.5", "2")
#: with Existing 'keep', an object of text search, automatic mode or Find similar with at least
#: this share of its pixels on objects already in the layer is one of them and is not written
ALREADY_THERE = 0.5


def _left_out(output, plane: "L.ViewPlane", written: np.ndarray) -> int:
    """How many objects of a result were left out as already in the layer (see
    :data:`ALREADY_THERE`): their label ids are nowhere on the plane."""
    return int((~np.isin(written, np.asarray(output.data[plane.leading]))).sum())


def _already_there(missing: int) -> str:
    """A status suffix naming ``missing`` objects left out as already there; empty for none."""
    return f" ({missing} already there, left out)" if missing else ""


def _presets() -> list[str]:
    """``auto`` first (official Focal-T when on this machine, else the shipped model), then all."""
    from ..model import available_models

    return ["auto", *available_models()]


@dataclass
class _Last:
    """The previous Segment: where, which prompt objects, which label ids, the engine result."""

    key: tuple
    groups: list[Any]
    label_ids: np.ndarray
    result: Segmentation


class SeemWidget(QWidget):
    """Dock widget: model, image, prompt layers, output Labels layer and the SEEM actions.

    Args:
        napari_viewer: the viewer (injected by napari).
        segmenter: an engine ``Segmenter`` to use right away (scripts, tests); otherwise one is
            loaded with *Load model*.
    """

    def __init__(self, napari_viewer, segmenter=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.segmenter = segmenter
        self.model_name: str | None = "custom" if segmenter is not None else None
        self._session_vocabulary: list[str] = []  # classes of a re-opened session, for the next model
        self.worker = None
        self.last_error: Exception | None = None
        self._progress = None
        self._cancelled = False
        self._last: _Last | None = None
        self._reference: tuple[np.ndarray, np.ndarray, str] | None = None
        self._steps_done = 0
        self._progress_timer = QTimer(self)
        self._progress_timer.setInterval(PROGRESS_INTERVAL_MS)
        self._progress_timer.timeout.connect(self._show_progress)
        self._build()
        if segmenter is not None:
            self.set_segmenter(segmenter)
        self._connect_viewer()
        self.refresh_layers()
        install_shortcuts(self.viewer, self)
        self._set_busy(False)

    # ------------------------------------------------------------------------------------- UI
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(self._model_box())
        layout.addWidget(self._input_box())
        layout.addWidget(self._output_box())
        layout.addWidget(self._actions_box())
        layout.addWidget(self._propagate_box())
        layout.addWidget(self._reference_box())
        layout.addWidget(self._vocabulary_box())
        layout.addLayout(self._status_row())
        layout.addStretch(1)

    @staticmethod
    def _button(text: str, tip: str, slot: Callable) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(lambda _checked=False: slot())
        return button

    @staticmethod
    def _check(text: str, tip: str, slot: Callable | None = None) -> QCheckBox:
        """A ticked check box with a tooltip, calling ``slot(checked)`` when toggled."""
        check = QCheckBox(text)
        check.setChecked(True)
        check.setToolTip(tip)
        if slot is not None:
            check.toggled.connect(slot)
        return check

    @staticmethod
    def _combo(items: list[str], tip: str, editable: bool = False) -> QComboBox:
        combo = QComboBox()
        combo.addItems(items)
        combo.setEditable(editable)
        combo.setToolTip(tip)
        return combo

    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = self._combo(_presets(), "SEEM preset (official weights, downloaded once) or "
                                       "the path of a local checkpoint file (.pt/.pth/.safetensors)", editable=True)
        browse = self._button("…", "Choose a local checkpoint file", self._browse_checkpoint)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(browse)
        form.addRow("Model", row)
        self.device_combo = self._combo(list(DEVICES), "Where the model runs (auto: GPU when available)")
        form.addRow("Device", self.device_combo)
        self.scale_combo = self._combo(list(SCALE_CHOICES), "Resize images by this factor before the model sees "
                                       "them: below 1 when the objects are larger than those the model knows "
                                       "(the shipped model: nuclei about 10-34 px across, cells 28-56 px), above 1 "
                                       "when they are smaller; auto = the model's own working size (512 px short "
                                       "side for the official checkpoints, the image's own size for the shipped "
                                       "model)", editable=True)
        form.addRow("Scale", self.scale_combo)
        self.load_button = self._button("Load model", "Load the chosen model in the background", self.load_model)
        self.model_label = QLabel("no model loaded" if self.segmenter is None else "model ready")
        self.model_label.setToolTip("The model in use")
        form.addRow(self.load_button, self.model_label)
        return box

    def _input_box(self) -> QGroupBox:
        box = QGroupBox("Image and prompts")
        form = QFormLayout(box)
        self.image_combo = self._combo([], "Image layer to segment (2D, ZYX, TYX, TZYX or RGB); "
                                       "the plane being viewed is used")
        self.image_combo.currentTextChanged.connect(lambda _t: self._update_axes())
        form.addRow("Image", self.image_combo)
        self.points_combo = self._combo([NONE], "Points layer with clicks; feature 'label' = positive/negative "
                                        f"({shortcut_for('toggle_polarity')} toggles)")
        form.addRow("Points", self.points_combo)
        self.shapes_combo = self._combo([NONE], "Shapes layer: rectangles = boxes, polygons/ellipses = areas, "
                                        "paths/lines = scribbles")
        form.addRow("Shapes", self.shapes_combo)
        self.mask_combo = self._combo([NONE], "Labels layer with a rough painted mask "
                                      "(each painted value is one object)")
        form.addRow("Mask", self.mask_combo)
        self.text_edit = QLineEdit()
        self.text_edit.setPlaceholderText("e.g. nucleus")
        self.text_edit.setToolTip("Text prompt: segment what the words describe (alone or with visual prompts)")
        form.addRow("Text", self.text_edit)
        form.addRow(self._button("Add prompt layers", "Create a Points and a Shapes layer for prompts "
                                 "on the chosen image", self.add_prompt_layers))
        return box

    def _output_box(self) -> QGroupBox:
        box = QGroupBox("Output")
        form = QFormLayout(box)
        self.output_combo = self._combo([NEW_LAYER], "Labels layer that receives the objects")
        form.addRow("Labels", self.output_combo)
        self.mode_combo = self._combo(list(L.MODES), "keep: never overwrite existing objects; "
                                      "replace: new objects are painted over existing ones")
        form.addRow("Existing", self.mode_combo)
        self.memory_check = self._check("Correct previous result (memory)",
                                        "Segment again after adding clicks: the previous mask of the same "
                                        "object is SEEM's memory prompt and the object keeps its id")
        self.connected_check = self._check("One region per prompted object",
                                           "Keep only the parts of each mask connected to its clicks, shapes or "
                                           "painted mask (not look-alike objects elsewhere), cut off the part "
                                           "a negative click falls in (on a nucleus: its whole side; a positive one grows it), "
                                           "and give a box the object that fills it (decoded from clicks in the "
                                           "box, clipped to it); off: SEEM's raw masks",
                                           self._set_connected_objects)
        self.nucleus_check = self._check("A cell holds one nucleus",
                                         "With 'cell' and 'nucleus' in the vocabulary: a clicked cell whose mask "
                                         "covers other cells' nuclei is cut between its own nucleus and theirs "
                                         "(a positive click on a second nucleus keeps it: a cell with two nuclei); "
                                         "the text prompt 'cell' gives each nucleus its own cell",
                                         self._set_cells_hold_one_nucleus)
        for check in (self.memory_check, self.connected_check, self.nucleus_check):
            form.addRow(check)
        self.tile_combo = self._combo(list(TILE_CHOICES), "Segment everything and text-only prompts tile by tile, "
                                      "each tile at about its own scale (large fields with small objects): "
                                      "auto = the model's working size (512 px; 256 for the shipped model; "
                                      "divided by the Scale when one is set), "
                                      "or a tile side in pixels; tiles overlap by "
                                      f"{DEFAULT_OVERLAP} px (a quarter of smaller tiles)", editable=True)
        form.addRow("Tiles", self.tile_combo)
        return box

    def _tiling(self) -> tuple[bool, int | None]:
        """``(tile?, tile side or None for the model's own)`` from the Tiles box."""
        text = self.tile_combo.currentText().strip().lower()
        if text in ("", "off"):
            return False, None
        if text == "auto":
            return True, None
        if not text.isdigit() or int(text) < 32:
            raise ValueError(f"Tiles: expected off, auto or a tile side of at least 32 px, got {text!r}")
        return True, int(text)

    def _run_tiled(self, seg, image, plane: L.ViewPlane, text: str | None, write: Callable, desc: str) -> None:
        """Run automatic mode or text search on the plane tile by tile, with a step per tile."""
        from ..engine.tiles import default_tile, tile_starts

        _, tile = self._tiling()
        side = tile or default_tile(seg)
        overlap = min(DEFAULT_OVERLAP, side // 4)
        total = len(tile_starts(plane.shape[0], side, overlap)) * len(tile_starts(plane.shape[1], side, overlap))
        self._run(workers.segment_tiled, (seg, self._read_plane(image, plane), text, tile, overlap),
                  desc=f"{desc} ({total} tiles of {side} px)", on_result=write, on_yield=lambda step: None,
                  total=total)

    @staticmethod
    def _untiled(desc: str, seg, plane: L.ViewPlane) -> str:
        """``desc``, with a hint when the plane is at least two working tiles wide and high: in
        one piece, small objects are found worse than tile by tile (see the Tiles box)."""
        from ..engine.tiles import default_tile

        if getattr(seg, "short_side", "absent") == "absent":  # not an engine Segmenter (a test double)
            return desc
        side = default_tile(seg)
        if min(plane.shape) < 2 * side:
            return desc
        return f"{desc} in one piece (Tiles 'auto', {side} px, finds more small objects in a field this large)"

    def _set_connected_objects(self, checked: bool) -> None:
        if self.segmenter is not None:
            self.segmenter.connected_objects = bool(checked)
        self.nucleus_check.setEnabled(bool(checked))  # one of the region rules

    def _set_cells_hold_one_nucleus(self, checked: bool) -> None:
        if self.segmenter is not None:
            self.segmenter.cells_hold_one_nucleus = bool(checked)

    def _actions_box(self) -> QGroupBox:
        box = QGroupBox("Segment")
        row = QHBoxLayout(box)
        self.segment_button = self._button(f"Segment ({shortcut_for('segment')})",
                                           "Segment the prompted objects on the viewed plane", self.segment)
        self.accept_button = self._button(f"Next object ({shortcut_for('accept')})",
                                          "Keep the result, clear the prompts and start a new object", self.accept)
        self.everything_button = self._button("Segment everything", "Automatic segmentation of the viewed plane "
                                              "with class names from the vocabulary", self.segment_everything)
        for widget in (self.segment_button, self.accept_button, self.everything_button):
            row.addWidget(widget)
        return box

    def _propagate_box(self) -> QGroupBox:
        box = QGroupBox("Propagate through z / t")
        form = QFormLayout(box)
        self.axis_combo = self._combo([], "Axis to propagate along (a non-displayed axis of the image)")
        self.axis_combo.currentIndexChanged.connect(lambda _i: self._update_range())
        form.addRow("Axis", self.axis_combo)
        self.direction_combo = self._combo(list(DIRECTIONS), "Propagate to later, earlier or all frames")
        form.addRow("Direction", self.direction_combo)
        self.range_from, self.range_to = QSpinBox(), QSpinBox()
        self.range_from.setToolTip("First frame of the range (inclusive)")
        self.range_to.setToolTip("Last frame of the range (inclusive)")
        row = QHBoxLayout()
        row.addWidget(self.range_from)
        row.addWidget(QLabel("to"))
        row.addWidget(self.range_to)
        form.addRow("Range", row)
        self.propagate_button = self._button(f"Propagate ({shortcut_for('propagate')})",
                                             "Track the objects of the viewed frame through the range; "
                                             "correct a frame and propagate again from it", self.propagate)
        form.addRow(self.propagate_button)
        return box

    def _reference_box(self) -> QGroupBox:
        box = QGroupBox("Referring image")
        form = QFormLayout(box)
        self.reference_button = self._button("Use selected object as reference",
                                             "The selected label of the output layer on the viewed plane "
                                             "becomes the example to search for", self.set_reference)
        self.reference_label = QLabel("no reference")
        form.addRow(self.reference_button, self.reference_label)
        self.similar_scope = self._combo(["viewed plane", "all frames along axis"],
                                         "Where to look for objects like the reference")
        self.similar_button = self._button("Find similar", "Find objects like the reference", self.find_similar)
        form.addRow(self.similar_scope, self.similar_button)
        return box

    def _vocabulary_box(self) -> QGroupBox:
        box = QGroupBox("Vocabulary (class names)")
        layout = QVBoxLayout(box)
        self.vocab_edit = QPlainTextEdit()
        self.vocab_edit.setPlaceholderText("one class name per line, e.g.\nnucleus\ncell")
        self.vocab_edit.setToolTip("Class names used to name objects (one per line)")
        self.vocab_edit.setMaximumHeight(90)
        layout.addWidget(self.vocab_edit)
        self.vocab_button = self._button("Apply vocabulary", "Use these class names from now on",
                                         self.apply_vocabulary)
        layout.addWidget(self.vocab_button)
        return box

    def _status_row(self) -> QVBoxLayout:
        layout = QVBoxLayout()
        row = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Progress of the running job")
        self.cancel_button = self._button("Cancel", "Stop the running job (frames already done are kept)",
                                          self.cancel)
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        return layout

    # ----------------------------------------------------------------------------- layer lists
    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._on_layers_changed)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._on_layers_changed)
        self.viewer.dims.events.ndim.connect(lambda _e: self._update_axes())

    def _on_layers_changed(self, event=None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._on_layers_changed)
            self.refresh_layers()
            self._adopt_session(event.value)
            return
        self.refresh_layers()

    def _adopt_session(self, layer) -> None:
        """A Labels layer made by this widget (e.g. from a re-opened session) while no model is
        loaded: choose it as the output and prepare its model and classes, so *Load model*
        continues the work with what made it."""
        from napari.layers import Labels

        recorded = layer.metadata.get(METADATA_KEY) if isinstance(layer, Labels) else None
        if not isinstance(recorded, dict) or self.segmenter is not None:
            return
        self.output_combo.setCurrentText(layer.name)
        model = recorded.get("model")
        if isinstance(model, str) and (model in _presets() or Path(model).expanduser().is_file()):
            self.model_combo.setCurrentText(model)
            self.model_label.setText(f"{layer.name!r} was made with {model}: Load model to continue")
        scale = recorded.get("scale")
        if isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale <= MAX_SCALE:
            self.scale_combo.setCurrentText(f"{scale:g}")
        self._session_vocabulary = [str(n) for n in recorded.get("vocabulary") or []]
        if self._session_vocabulary:
            self.vocab_edit.setPlainText("\n".join(self._session_vocabulary))

    def refresh_layers(self) -> None:
        """Fill the layer choices from the viewer, keeping the current choices when possible."""
        from napari.layers import Image, Labels, Points, Shapes

        def names(kind) -> list[str]:
            return [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]

        image_names = names(Image)
        self._fill(self.image_combo, image_names)
        self._fill(self.points_combo, [NONE, *names(Points)])
        self._fill(self.shapes_combo, [NONE, *names(Shapes)])
        self._fill(self.mask_combo, [NONE, *names(Labels)])
        self._fill(self.output_combo, [NEW_LAYER, *names(Labels)])
        self._update_axes()

    @staticmethod
    def _fill(combo: QComboBox, items: list[str]) -> None:
        current = combo.currentText()
        if [combo.itemText(i) for i in range(combo.count())] == items:
            return
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(items)
        if current in items:
            combo.setCurrentText(current)
        combo.blockSignals(False)
        if combo.currentText() != current:
            combo.currentTextChanged.emit(combo.currentText())

    def _layer(self, combo: QComboBox):
        name = combo.currentText()
        if name in (NONE, NEW_LAYER, "") or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def image_layer(self):
        """The chosen Image layer (``ValueError`` when there is none)."""
        layer = self._layer(self.image_combo)
        if layer is None:
            raise ValueError("open an image first (no Image layer chosen)")
        return layer

    def _update_axes(self) -> None:
        try:
            image = self.image_layer()
        except ValueError:
            self._fill(self.axis_combo, [])
            return
        shape = L.spatial_shape(image)
        world_labels = list(self.viewer.dims.axis_labels)
        offset = len(world_labels) - len(shape)
        items = [f"{world_labels[offset + a] if offset + a >= 0 else a} ({shape[a]})" for a in range(len(shape) - 2)]
        self._fill(self.axis_combo, items)
        self._update_range()

    def _update_range(self) -> None:
        axis = self.axis_combo.currentIndex()
        try:
            size = L.spatial_shape(self.image_layer())[axis] if axis >= 0 else 1
        except ValueError:
            size = 1
        for spin in (self.range_from, self.range_to):
            spin.setRange(0, max(size - 1, 0))
        self.range_from.setValue(0)
        self.range_to.setValue(max(size - 1, 0))

    def output_layer(self, image):
        """The chosen output Labels layer, created on the image's grid when *(new layer)*."""
        layer = self._layer(self.output_combo)
        if layer is None:
            shape = L.spatial_shape(image)
            layer = self.viewer.add_labels(np.zeros(shape, dtype=np.int32), **L.output_layer_kwargs(image))
            self.output_combo.setCurrentText(layer.name)
        L.check_output(layer, image)
        return layer

    def add_prompt_layers(self) -> None:
        """Add a Points layer (positive/negative clicks) and a Shapes layer on the chosen image."""
        image = self.image_layer()
        transform = {k: getattr(image, k) for k in ("scale", "translate", "rotate", "shear", "affine")}
        features = pd.DataFrame({
            "label": pd.Categorical([], categories=list(POINT_COLORS)),
            "object": pd.Series([], dtype="int64"),
        })
        points = self.viewer.add_points(
            np.zeros((0, image.ndim)), name="SEEM points", features=features, face_color="label",
            face_color_cycle=POINT_COLORS, size=max(3.0, min(L.spatial_shape(image)[-2:]) / 40), **transform,
        )
        points.feature_defaults = {"label": "positive", "object": 1}
        points.mode = "add"
        shapes = self.viewer.add_shapes(ndim=image.ndim, name="SEEM shapes", edge_color="yellow",
                                        face_color="transparent", edge_width=2, **transform)
        self.points_combo.setCurrentText(points.name)
        self.shapes_combo.setCurrentText(shapes.name)
        self.viewer.layers.selection.active = points

    # ---------------------------------------------------------------------------- model and jobs
    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "SEEM checkpoint", "", "Checkpoints (*.pt *.pth *.safetensors)")
        if path:
            self.model_combo.setCurrentText(path)

    def set_segmenter(self, segmenter, name: str = "custom") -> None:
        """Use ``segmenter`` from now on (also what *Load model* ends with).

        The model is recorded (in the output layer's metadata, so in saved sessions) by the name
        the segmenter knows itself by when it has one: what ``auto`` resolved to, not ``auto``.
        """
        self.segmenter = segmenter
        own = getattr(segmenter, "model_name", None)
        self.model_name = own if isinstance(own, str) and own and own != "custom" else name
        self._last = None
        own_scale = getattr(segmenter, "scale", None)
        if own_scale is not None:  # a segmenter made with a scale shows it; else the box's choice applies
            self.scale_combo.setCurrentText(f"{own_scale:g}")
        self.connected_check.setChecked(bool(getattr(segmenter, "connected_objects", True)))
        self.nucleus_check.setChecked(bool(getattr(segmenter, "cells_hold_one_nucleus", True)))
        shown = self.model_name if self.model_name == name else f"{self.model_name} ({name})"
        self.model_label.setText(f"{shown} ready")
        session, self._session_vocabulary = self._session_vocabulary, []
        if session and hasattr(segmenter, "set_vocabulary"):
            segmenter.set_vocabulary(session)  # continue a re-opened session with its classes
        vocabulary = list(getattr(segmenter, "vocabulary", []) or [])
        self.vocab_edit.setPlainText("\n".join(vocabulary))

    def load_model(self) -> None:
        """Load the chosen preset or checkpoint in a thread worker."""
        name = self.model_combo.currentText().strip()
        device = self.device_combo.currentText()
        self.model_label.setText(f"loading {name} …")
        self._run(workers.load_segmenter, (name, device), desc=f"Loading {name}",
                  on_result=lambda seg: self.set_segmenter(seg, name))

    def _require_model(self):
        if self.segmenter is None:
            raise ValueError("load a model first (Model → Load model)")
        scale = self._scale()
        if scale != getattr(self.segmenter, "scale", None):
            self.segmenter.scale = scale
            self._last = None  # a previous result at the other scale cannot be the memory prompt
        return self.segmenter

    def _scale(self) -> float | None:
        """The Scale box: a factor, or None for the model's own working size."""
        text = self.scale_combo.currentText().strip().lower()
        if text in ("", "auto"):
            return None
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value <= MAX_SCALE:
            raise ValueError(f"Scale: expected auto or a factor above 0 and at most {MAX_SCALE:g}, got {text!r}")
        return value

    def _run(self, job: Callable, args: tuple, desc: str, on_result: Callable | None = None,
             on_yield: Callable | None = None, total: int = 0):
        """Start ``job`` in a thread worker with progress, error report and cancel."""
        from napari.utils import progress

        if self.worker is not None:
            raise RuntimeError("SEEM is busy; wait or press Cancel")
        worker = workers.make_worker(job, *args)
        self.worker, self._cancelled, self.last_error = worker, False, None
        self._progress = progress(total=total, desc=desc)
        self._steps_done = 0
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(0)
        self._progress_timer.start()
        self.status_label.setText(f"{desc} …")
        if on_result is not None:
            worker.returned.connect(lambda value: None if self._cancelled else self._guard(on_result, value))
        if on_yield is not None:
            worker.yielded.connect(lambda value: self._on_yield(on_yield, value))
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda: self._on_finished(worker, desc))
        self._set_busy(True)
        worker.start()
        return worker

    def _on_yield(self, handler: Callable, value) -> None:
        self._guard(handler, value)
        self._steps_done += 1

    def _show_progress(self) -> None:
        """Move the progress bars to the steps done (on a timer: a progress bar repaints the
        window synchronously, so it is updated a few times a second, not once per frame)."""
        done = self._steps_done
        if self._progress is not None and done > self._progress.n:
            self._progress.update(done - self._progress.n)
        if done != self.progress_bar.value() and self.progress_bar.maximum() > 0:
            self.progress_bar.setValue(min(done, self.progress_bar.maximum()))

    def _guard(self, handler: Callable, value) -> None:
        try:
            handler(value)
        except Exception as exc:  # noqa: BLE001 - shown to the user, kept for scripts/tests
            self._report(exc)

    def _on_error(self, exc: Exception) -> None:
        self._report(exc)

    def _report(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self.last_error = exc
        self.status_label.setText(f"Error: {exc}")
        show_error(f"SEEM: {exc}")

    def _on_finished(self, worker, desc: str) -> None:
        self._progress_timer.stop()
        self._show_progress()
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self.worker is worker:
            self.worker = None
        if self.last_error is None:
            result_note = self.status_label.text()  # what a result handler said (objects written, ...)
            done = f"{desc}: cancelled" if self._cancelled else f"{desc}: done"
            no_note = result_note in (f"{desc} …", "cancelling …")
            self.status_label.setText(done if no_note else f"{done}; {result_note}")
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        for button in (self.load_button, self.segment_button, self.everything_button, self.propagate_button,
                       self.similar_button, self.vocab_button, self.reference_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if not busy and self.progress_bar.maximum() == 0:  # a job without steps: show it complete
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0 if self._cancelled or self.last_error else 1)

    def cancel(self) -> None:
        """Stop the running job; frames already written stay."""
        if self.worker is not None:
            self._cancelled = True
            self.worker.quit()
            self.status_label.setText("cancelling …")

    def _action(self, func: Callable) -> None:
        """Run a user action, reporting a ``ValueError``/``RuntimeError`` instead of raising."""
        try:
            self.last_error = None
            func()
        except (ValueError, RuntimeError) as exc:
            self._report(exc)

    def _read_plane(self, image, plane: L.ViewPlane) -> Callable[[], np.ndarray]:
        return lambda: L.plane_pixels(image, plane)

    def _remember(self, output, **settings) -> None:
        vocabulary = list(getattr(self.segmenter, "vocabulary", []) or [])
        output.metadata[METADATA_KEY] = {
            "model": self.model_name, "device": self.device_combo.currentText(),
            "scale": getattr(self.segmenter, "scale", None),
            "mode": self.mode_combo.currentText(), "vocabulary": vocabulary, **settings,
        }

    # ---------------------------------------------------------------------------------- actions
    def segment(self) -> None:
        """Segment the prompted objects on the viewed plane (shortcut: Shift-S)."""
        self._action(self._segment)

    def _segment(self) -> None:
        seg = self._require_model()
        image = self.image_layer()
        plane = L.current_plane(image, self.viewer.dims)
        ids, prompts = L.collect_prompts(image, plane, self._layer(self.points_combo),
                                         self._layer(self.shapes_combo), self._layer(self.mask_combo))
        text = self.text_edit.text().strip()
        if not prompts and not text:
            raise ValueError("add a positive click, a shape, a painted mask or a text prompt first")
        output = self.output_layer(image)
        key = (image.name, output.name, plane.leading)
        label_ids, previous = self._correction(key, ids, output) if prompts else (None, None)
        mode = self.mode_combo.currentText()

        def write(result: Segmentation) -> None:
            written = L.write_result(output, plane, result, mode, label_ids,
                                     skip_covered=None if prompts else ALREADY_THERE)
            groups = ids if prompts else [f"text:{text}"] * len(result)
            self._last = _Last(key, list(groups), written, result)
            self._remember(output, text=text)
            self.status_label.setText(f"{len(result)} object(s) written to {output.name!r}"
                                      + ("" if prompts else _already_there(_left_out(output, plane, written))))

        if not prompts and self._tiling()[0]:
            self._run_tiled(seg, image, plane, text, write, "Segmenting")
            return
        desc = "Segmenting" if prompts else self._untiled("Segmenting", seg, plane)
        self._run(workers.predict, (seg, self._read_plane(image, plane), prompts, text, previous),
                  desc=desc, on_result=write)

    def _correction(self, key: tuple, ids: list[int], output) -> tuple[np.ndarray, Segmentation | None]:
        """Label ids for the prompt objects (kept from the previous Segment on this plane) and the
        previous result as memory when the same objects are segmented again."""
        known: dict[Any, int] = {}
        last = self._last
        if last is not None and last.key == key:
            known = {g: int(i) for g, i in zip(last.groups, last.label_ids)}
        fresh = L.next_label(output)
        label_ids = []
        for group in ids:
            if group in known:
                label_ids.append(known[group])
            else:
                label_ids.append(fresh)
                fresh += 1
        previous = None
        if (self.memory_check.isChecked() and last is not None and last.key == key
                and set(ids) == set(last.groups) and len(ids) == len(last.groups)):
            previous = last.result.select([last.groups.index(g) for g in ids])
        return np.asarray(label_ids, dtype=np.int64), previous

    def accept(self) -> None:
        """Keep the objects as they are, clear the click/shape prompts, start a new object."""
        points, shapes = self._layer(self.points_combo), self._layer(self.shapes_combo)
        if points is not None and len(points.data):
            points.data = np.zeros((0, points.ndim))
        if shapes is not None and len(shapes.data):
            shapes.data = []
        self._last = None
        self.status_label.setText("accepted; prompt the next object")

    def toggle_polarity(self) -> None:
        """Flip positive/negative for the selected points, or for the next clicks when none is selected."""
        points = self._layer(self.points_combo)
        if points is None:
            return
        if "label" not in points.features:
            points.features = points.features.assign(label=pd.Categorical(
                ["positive"] * len(points.data), categories=list(POINT_COLORS)))
        flip = {"positive": "negative", "negative": "positive"}
        selected = sorted(points.selected_data)
        if selected:
            values = points.features["label"].astype(object).to_numpy().copy()
            for i in selected:
                values[i] = flip.get(str(values[i]), "positive")
            features = points.features.copy()
            features["label"] = pd.Categorical(values, categories=list(POINT_COLORS))
            points.features = features
            points.refresh_colors()
            self.status_label.setText(f"{len(selected)} point(s) toggled")
        else:
            current = str(points.feature_defaults["label"].iloc[0]) if "label" in points.feature_defaults else "positive"
            points.feature_defaults = {**{c: points.feature_defaults[c].iloc[0] for c in points.feature_defaults},
                                       "label": flip.get(current, "positive")}
            self.status_label.setText(f"next clicks: {points.feature_defaults['label'].iloc[0]}")

    def segment_everything(self) -> None:
        """Automatic segmentation of the viewed plane, with class names."""
        self._action(self._segment_everything)

    def _segment_everything(self) -> None:
        seg = self._require_model()
        image = self.image_layer()
        plane = L.current_plane(image, self.viewer.dims)
        output = self.output_layer(image)
        mode = self.mode_combo.currentText()

        def write(result: Segmentation) -> None:
            written = L.write_result(output, plane, result, mode, skip_covered=ALREADY_THERE)
            self._remember(output, action="segment everything")
            missing = _left_out(output, plane, written)
            self.status_label.setText(f"{len(result)} object(s) found{_already_there(missing)}")

        if self._tiling()[0]:
            self._run_tiled(seg, image, plane, None, write, "Segmenting everything")
            return
        self._run(workers.segment_everything, (seg, self._read_plane(image, plane)),
                  desc=self._untiled("Segmenting everything", seg, plane), on_result=write)

    def propagate(self) -> None:
        """Propagate the objects of the viewed frame along the chosen axis (shortcut: Shift-P)."""
        self._action(self._propagate)

    def _propagate(self) -> None:
        seg = self._require_model()
        image = self.image_layer()
        plane = L.current_plane(image, self.viewer.dims)
        axis = self.axis_combo.currentIndex()
        if axis < 0 or not plane.leading:
            raise ValueError("the image has no z/t axis to propagate along")
        output = self.output_layer(image)
        seeds = L.seeds_from_labels(output, plane)
        if not len(seeds):
            raise ValueError("segment objects on this frame first (nothing to propagate)")
        lo, hi, cur = self.range_from.value(), self.range_to.value(), plane.leading[axis]
        if not lo <= cur <= hi:
            raise ValueError(f"the viewed frame {cur} is outside the range {lo}..{hi}")
        direction = self.direction_combo.currentText()
        total = {"forward": hi - cur, "backward": cur - lo, "both": hi - lo}[direction]
        mode = self.mode_combo.currentText()

        def write(item: tuple[int, Segmentation]) -> None:
            index, result = item
            frame = lo + index
            if frame == cur:
                return
            known = set(seeds.object_ids.tolist())
            ids = result.object_ids if set(result.object_ids.tolist()) <= known else seeds.object_ids[:len(result)]
            L.write_result(output, plane.at(axis, frame), result, mode, label_ids=ids)
            L.update_features(output, ids, result, keep_names=True)

        def frames() -> np.ndarray:
            return L.frame_stack(image, plane, axis, lo, hi + 1)

        hold = HOLD_PROBABILITY if self._is_time_axis(axis) else None  # a z-stack's sections do shrink
        self._remember(output, action="propagate", axis=axis, direction=direction, range=[lo, hi])
        self._run(workers.propagate, (seg, frames, cur - lo, seeds, direction, hold),
                  desc=f"Propagating {direction}", on_yield=write, total=total)

    def _is_time_axis(self, axis: int) -> bool:
        """Whether leading axis ``axis`` of the image is labelled as time in the viewer (``t``, ``time``)."""
        labels = list(self.viewer.dims.axis_labels)
        position = len(labels) - len(L.spatial_shape(self.image_layer())) + axis
        return 0 <= position < len(labels) and str(labels[position]).strip().lower() in TIME_AXIS_LABELS

    def set_reference(self) -> None:
        """Use the selected label of the output layer (viewed plane) as the referring example."""
        self._action(self._set_reference)

    def _set_reference(self) -> None:
        image = self.image_layer()
        plane = L.current_plane(image, self.viewer.dims)
        output = self._layer(self.output_combo)
        if output is None:
            raise ValueError("choose the output Labels layer holding the reference object")
        label = int(output.selected_label)
        mask = np.asarray(output.data[plane.leading]) == label
        if not mask.any():
            raise ValueError(f"label {label} (the selected label) is not on the viewed plane")
        where = self._plane_name(plane)
        self._reference = (L.plane_pixels(image, plane), mask, f"label {label}" + (f", {where}" if where else ""))
        self.reference_label.setText(self._reference[2])

    def _plane_name(self, plane) -> str:
        """The viewed plane as a person names it: ``"t=3"``, ``"t=3, z=12"``, ``"axis 0=3"`` where
        the axis has napari's default (numeric) label; ``""`` for a 2D image."""
        if not plane.leading:
            return ""
        labels = list(self.viewer.dims.axis_labels)[-(len(plane.leading) + 2):-2]
        if len(labels) != len(plane.leading):
            labels = [""] * len(plane.leading)

        def name(axis: int, label: str) -> str:
            return f"axis {axis}" if label.lstrip("-").isdigit() or not label else label

        return ", ".join(f"{name(axis, label)}={index}"
                         for axis, (label, index) in enumerate(zip(labels, plane.leading)))

    def find_similar(self) -> None:
        """Find objects like the reference on the viewed plane or on every frame along the axis."""
        self._action(self._find_similar)

    def _find_similar(self) -> None:
        seg = self._require_model()
        if self._reference is None:
            raise ValueError("set a reference object first")
        image = self.image_layer()
        plane = L.current_plane(image, self.viewer.dims)
        output = self.output_layer(image)
        if self.similar_scope.currentIndex() == 0 or not plane.leading:
            planes = [plane]
        else:
            axis = max(self.axis_combo.currentIndex(), 0)
            planes = [plane.at(axis, t) for t in range(self.range_from.value(), self.range_to.value() + 1)]
        targets = [(p, self._read_plane(image, p)) for p in planes]
        mode = self.mode_combo.currentText()

        counts = {"found": 0, "left out": 0}

        def write(item: tuple[L.ViewPlane, Segmentation]) -> None:
            target, result = item
            written = L.write_result(output, target, result, mode, skip_covered=ALREADY_THERE)
            counts["found"] += len(result)
            counts["left out"] += _left_out(output, target, written)
            where = f" on {len(targets)} planes" if len(targets) > 1 else ""
            self.status_label.setText(f"{counts['found']} object(s) like the reference found{where}"
                                      + _already_there(counts["left out"]))

        ref_image, ref_mask, _ = self._reference
        self._remember(output, action="find similar")
        self._run(workers.find_similar, (seg, ref_image, ref_mask, targets), desc="Finding similar objects",
                  on_yield=write, total=len(targets))

    def apply_vocabulary(self) -> None:
        """Use the class names of the vocabulary box (text embeddings computed in a worker)."""
        self._action(self._apply_vocabulary)

    def _apply_vocabulary(self) -> None:
        seg = self._require_model()
        names = [line.strip() for line in self.vocab_edit.toPlainText().splitlines() if line.strip()]
        if not names:
            raise ValueError("the vocabulary is empty; enter one class name per line")

        def done(vocabulary: list[str]) -> None:
            self.vocab_edit.setPlainText("\n".join(vocabulary))
            self.status_label.setText(f"vocabulary: {len(vocabulary)} class names")

        self._run(workers.set_vocabulary, (seg, names), desc="Setting the vocabulary", on_result=done)

    # ------------------------------------------------------------------------------- teardown
    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.cancel()
        remove_shortcuts(self.viewer)
        super().closeEvent(event)
