"""Batch inputs: find image files in folders, read their axes, and read frames lazily.

Formats: TIFF / OME-TIFF / ImageJ TIFF (tifffile, read through its zarr view so a task reads only
its frames), zarr arrays and OME-Zarr groups (level ``0``), PNG / JPEG (imageio).

Axes are letters of the stored array, one per dimension: ``y``, ``x`` (the image plane), ``c``
(channels), and at most one stack axis, ``t`` (time) or ``z`` (depth). They come from the file's
metadata (OME, ImageJ, OME-Zarr) or from the shape (``[H, W]``, ``[H, W, 3|4]``, ``[N, H, W]``);
``axes=`` overrides them (e.g. ``"tcyx"``). Axes of length 1 are dropped. A channel axis of length
3 or 4 is read as RGB(A) unless ``channel=`` picks one channel; other channel counts need ``channel=``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg")
ZARR_SUFFIX = ".zarr"
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, *PLAIN_SUFFIXES, ZARR_SUFFIX)
AXIS_LETTERS = "tzcyx"
STACK_AXES = "tz"
_TIFF_AXES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}


class InputError(ValueError):
    """An input path, format or axis description that cannot be used (a user error)."""


@dataclass(frozen=True)
class ImageSource:
    """One input item: a 2D image or a stack, with how to read one frame.

    Attributes:
        path: the file or ``.zarr`` folder.
        name: output stem, unique within the run (relative path below the input folder).
        axes: letters of the stored array (after dropping length-1 axes is NOT applied here).
        shape: stored shape.
        channel: channel index taken from the ``c`` axis (None: RGB(A) or no channel axis).
        component: array path inside a zarr group (None for a plain array or a non-zarr file).
    """

    path: Path
    name: str
    axes: str
    shape: tuple[int, ...]
    channel: int | None = None
    component: str | None = None

    @property
    def stack_axis(self) -> str | None:
        """``"t"``, ``"z"`` or None (a single 2D image)."""
        return next((a for a in self.axes if a in STACK_AXES), None)

    @property
    def n_frames(self) -> int:
        axis = self.stack_axis
        return 1 if axis is None else self.shape[self.axes.index(axis)]

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one frame."""
        return self.shape[self.axes.index("y")], self.shape[self.axes.index("x")]

    @property
    def is_stack(self) -> bool:
        return self.stack_axis is not None

    def read_frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start..stop-1`` as ``[n, H, W]`` or ``[n, H, W, C]`` (C = 3 or 4, RGB(A))."""
        stop = self.n_frames if stop is None else stop
        if not 0 <= start < stop <= self.n_frames:
            raise IndexError(f"frames {start}..{stop - 1} outside 0..{self.n_frames - 1} of {self.path}")
        index: list[object] = []
        kept: list[str] = []
        for letter, size in zip(self.axes, self.shape):
            if letter in STACK_AXES:
                index.append(slice(start, stop))
                kept.append("t")
            elif letter == "c" and self.channel is not None:
                index.append(self.channel)
            elif letter in "yxc":
                index.append(slice(None))
                kept.append(letter)
            else:  # a length-1 axis of another kind
                index.append(0)
        with open_array(self.path, self.component) as array:
            data = np.asarray(array[tuple(index)])
        if "t" not in kept:
            data = data[None]
            kept.insert(0, "t")
        order = [kept.index(a) for a in "tyxc" if a in kept]
        return np.ascontiguousarray(data.transpose(order))

    def describe(self) -> dict:
        return {"path": str(self.path), "name": self.name, "axes": self.axes, "shape": list(self.shape),
                "channel": self.channel}


# --------------------------------------------------------------------------------------- opening
@contextlib.contextmanager
def open_array(path: Path, component: str | None = None) -> Iterator[object]:
    """An array-like (sliceable, ``.shape``) view of the file, read lazily where the format allows."""
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile
        import zarr

        with tifffile.imread(path, aszarr=True) as store:
            yield zarr.open(store, mode="r")
    elif suffix == ZARR_SUFFIX or (path / "zarr.json").exists() or (path / ".zarray").exists():
        import zarr

        node = zarr.open(str(path), mode="r")
        yield node if component is None else node[component]
    elif suffix in PLAIN_SUFFIXES:
        import imageio.v3 as iio

        yield iio.imread(path)
    else:
        raise InputError(f"{path}: unsupported format (use {', '.join(IMAGE_SUFFIXES)})")


def _tiff_axes(path: Path) -> tuple[str | None, tuple[int, ...]]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        letters = "".join(_TIFF_AXES.get(a, "?") for a in series.axes)
        return letters, tuple(series.shape)


def _zarr_axes(path: Path) -> tuple[str | None, tuple[int, ...], str | None]:
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return None, tuple(node.shape), None
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        level = multiscales[0]["datasets"][0]["path"]
        names = [a["name"] if isinstance(a, dict) else a for a in multiscales[0].get("axes", [])]
        letters = "".join(n.lower()[0] if n and n.lower()[0] in AXIS_LETTERS else "?" for n in names) or None
        return letters, tuple(node[level].shape), level
    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) != 1:
        raise InputError(f"{path}: zarr group with {len(arrays)} arrays ({', '.join(arrays[:5])}); "
                         "give the array itself, e.g. PATH.zarr/<name>")
    return None, tuple(node[arrays[0]].shape), arrays[0]


def _guess_axes(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3 and shape[-1] in (3, 4):
        return "yxc"
    if len(shape) == 3:
        return "tyx"
    if len(shape) == 4 and shape[-1] in (3, 4):
        return "tyxc"
    raise InputError(f"cannot tell the axes of an array of shape {shape}; give them, e.g. --axes tcyx")


def _resolve_unknown(letters: str, shape: tuple[int, ...], path: Path) -> str:
    """Metadata axes with unknown letters (e.g. tifffile's ``Q``): one unknown long axis is the stack."""
    unknown = [i for i, a in enumerate(letters) if a == "?" and shape[i] > 1]
    out = list(letters)
    if len(unknown) == 1 and not any(a in STACK_AXES for a in letters):
        out[unknown[0]] = "t"
    elif unknown:
        raise InputError(f"{path}: cannot tell the axes of an array of shape {shape} (metadata axes "
                         f"{letters!r}); give them, e.g. --axes tcyx")
    return "".join(out).replace("?", "q")


def check_axes(axes: str, shape: tuple[int, ...], path: Path | str = "") -> str:
    """Validate ``axes`` against ``shape``; returns the axes (letters lower-case)."""
    axes = axes.lower()
    where = f"{path}: " if path else ""
    if len(axes) != len(shape):
        raise InputError(f"{where}axes {axes!r} have {len(axes)} letters but the image has {len(shape)} "
                         f"dimensions {tuple(shape)}")
    bad = set(axes) - set(AXIS_LETTERS) - {"q"} | {a for a, n in zip(axes, shape) if a == "q" and n > 1}
    if bad:
        raise InputError(f"{where}unknown axis letter(s) {sorted(bad)} in {axes!r}: use t, z, c, y, x")
    if len(set(axes)) != len(axes):
        raise InputError(f"{where}axes {axes!r} repeat a letter")
    if "y" not in axes or "x" not in axes:
        raise InputError(f"{where}axes {axes!r} must contain y and x")
    long_stack = [a for a, n in zip(axes, shape) if a in STACK_AXES and n > 1]
    if len(long_stack) > 1:
        raise InputError(f"{where}the image has both a t and a z axis {tuple(shape)}; batch segments one stack "
                         "axis: split the file (one file per time point or per z-stack)")
    return axes


def _squeeze_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Mark length-1 axes other than y/x as ``q`` (read at index 0); keep a t/z axis only if long."""
    return "".join(a if (a in "yx" or n > 1) else "q" for a, n in zip(axes, shape))


def probe(path: Path, name: str, axes: str | None = None, channel: int | None = None) -> ImageSource:
    """Open ``path`` just enough to know its shape and axes; check ``channel`` against them."""
    suffix = path.suffix.lower()
    component = None
    try:
        if suffix in TIFF_SUFFIXES:
            found, shape = _tiff_axes(path)
        elif suffix == ZARR_SUFFIX or path.is_dir():
            found, shape, component = _zarr_axes(path)
        elif suffix in PLAIN_SUFFIXES:
            import imageio.v3 as iio

            props = iio.improps(path)
            found, shape = None, tuple(props.shape)
        else:
            raise InputError(f"{path}: unsupported format (use {', '.join(IMAGE_SUFFIXES)})")
    except InputError:
        raise
    except Exception as exc:  # a corrupt or unreadable file
        raise InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if axes is not None:
        letters = axes.lower()
    elif found is not None and len(found) == len(shape):
        letters = _resolve_unknown(found, shape, path)
    else:
        letters = _guess_axes(shape)
    letters = _squeeze_axes(check_axes(letters, shape, path), shape)
    if "c" in letters:
        n_channels = shape[letters.index("c")]
        if channel is not None and not -n_channels <= channel < n_channels:
            raise InputError(f"{path}: channel {channel} out of range: the image has {n_channels} channels")
        if channel is None and n_channels not in (3, 4):
            raise InputError(f"{path}: the image has {n_channels} channels (axes {letters!r}); choose one "
                             "with --channel N")
        channel = None if channel is None else channel % n_channels
    elif channel is not None and channel != 0:
        raise InputError(f"{path}: --channel {channel} given but the image has no channel axis (axes {letters!r})")
    else:
        channel = None
    return ImageSource(path=path, name=name, axes=letters, shape=shape, channel=channel, component=component)


# ------------------------------------------------------------------------------------- discovery
def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _output_name(path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None else Path(path.name)
    stem = rel.name
    for suffix in (".ome.tiff", ".ome.tif", *IMAGE_SUFFIXES):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return "__".join([*rel.parent.parts, stem])


def _scan(folder: Path, recursive: bool, exclude: Sequence[Path]) -> list[Path]:
    found = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or any(child.resolve() == e for e in exclude):
            continue
        if _is_image(child):
            found.append(child)
        elif recursive and child.is_dir():
            found.extend(_scan(child, recursive, exclude))
    return found


def discover(inputs: Sequence[str | Path], *, recursive: bool = False,
             exclude: Sequence[str | Path] = ()) -> list[tuple[Path, str]]:
    """``(path, output name)`` of every image in ``inputs`` (files, ``.zarr`` folders or folders).

    Raises:
        InputError: a missing path, an unsupported file, no image found, or two inputs that would
            write the same output name.
    """
    if not inputs:
        raise InputError("no input given: pass image files or folders")
    skip = [Path(e).resolve() for e in exclude]
    items: list[tuple[Path, str]] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InputError(f"input {str(raw)!r} does not exist")
        if path.is_dir() and path.suffix.lower() != ZARR_SUFFIX:
            found = _scan(path, recursive, skip)
            if not found:
                hint = "" if recursive else " (use --recursive for sub-folders)"
                raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {str(raw)!r}{hint}")
            items.extend((p, _output_name(p, path)) for p in found)
        elif _is_image(path) or path.suffix.lower() == ZARR_SUFFIX:
            items.append((path, _output_name(path, None)))
        else:
            raise InputError(f"input {str(raw)!r} is not a supported image ({', '.join(IMAGE_SUFFIXES)})")
    names: dict[str, Path] = {}
    for path, name in items:
        if name in names and names[name].resolve() != path.resolve():
            raise InputError(f"inputs {names[name]} and {path} would both write outputs named {name!r}; "
                             "rename one or run them separately")
        names[name] = path
    unique = {name: path for path, name in items}
    return [(path, name) for name, path in unique.items()]


def read_image(path: str | Path, axes: str | None = None, channel: int | None = None, frame: int = 0) -> np.ndarray:
    """One frame of an image file (e.g. an exemplar or a seed mask): ``[H, W]`` or ``[H, W, C]``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist")
    source = probe(path, path.stem, axes, channel)
    if not 0 <= frame < source.n_frames:
        raise InputError(f"{path}: frame {frame} outside 0..{source.n_frames - 1}")
    return source.read_frames(frame, frame + 1)[0]
