"""Optics and camera: label maps -> fluorescence channels -> blurred, noisy, digitised images.

Pipeline (per channel): clean emission (object brightness x intensity profile x texture) times an uneven
illumination field, Gaussian PSF blur (also along z for z-stacks), scaling to an expected photo-electron
count plus a background with a smooth gradient, Poisson shot noise, Gaussian read noise, gain + offset to
digital units, clipping to the 8- or 16-bit range.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .scene import LabelMaps, Range, Scene, draw

CHANNEL_MODES: tuple[str, ...] = ("merged", "nuclei", "cells", "vesicles", "rgb")
_TEXTURE_SIZE = 128


@dataclass(frozen=True)
class OpticsConfig:
    """Ranges ``(lo, hi)`` are drawn once per image / sequence (per channel for RGB); numbers fix them.

    Intensities are relative to the brightest signal (1.0); ``photons`` is the expected photo-electron
    count there (lower = noisier), ``read_noise`` the camera read noise in electrons.
    """

    psf_sigma: Range = (0.8, 2.0)
    psf_sigma_z: Range = (0.5, 1.2)
    background: Range = (0.03, 0.15)
    gradient: Range = (0.0, 0.5)
    vignetting: Range = (0.0, 0.3)
    photons: Range = (60.0, 600.0)
    read_noise: Range = (1.0, 5.0)
    peak_fraction: Range = (0.45, 0.85)
    dark_offset: Range = (0.0, 0.03)
    nucleus_texture: Range = (0.1, 0.35)
    cell_texture: Range = (0.05, 0.25)
    merged_weights: tuple[Range, Range, Range] = ((0.6, 1.0), (0.25, 0.5), (0.6, 1.0))


@dataclass(frozen=True)
class Textures:
    """Periodic smooth random textures (mean 1), sampled in object coordinates so they move with objects."""

    nucleus: np.ndarray
    cell: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, config: OpticsConfig) -> Textures:
        def smooth(sigma: float, amplitude: float) -> np.ndarray:
            noise = ndimage.gaussian_filter(rng.normal(size=(_TEXTURE_SIZE, _TEXTURE_SIZE)), sigma, mode="wrap")
            return (1.0 + amplitude * noise / noise.std()).clip(0.2, None).astype(np.float32)

        return cls(nucleus=smooth(1.2, draw(rng, config.nucleus_texture)),
                   cell=smooth(3.0, draw(rng, config.cell_texture)))


def _lookup(values: dict[int, float], size: int) -> np.ndarray:
    lut = np.zeros(size, np.float32)
    for key, val in values.items():
        if key < size:
            lut[key] = val
    return lut


def _textured(label: np.ndarray, scene: Scene, texture: np.ndarray) -> np.ndarray:
    """Texture value per pixel, in the frame of the pixel's object ([H, W]; any value on background)."""
    size = int(label.max()) + 1
    centres = scene.centres()
    ids = np.arange(size)
    # an object-specific texture offset derived from its id (deterministic, no RNG state needed)
    origin_r = (np.rint(_lookup({k: v[0] for k, v in centres.items()}, size)) - ids * 37).astype(np.int32)
    origin_c = (np.rint(_lookup({k: v[1] for k, v in centres.items()}, size)) - ids * 71).astype(np.int32)
    rows = np.arange(label.shape[0], dtype=np.int32)[:, None]
    cols = np.arange(label.shape[1], dtype=np.int32)[None, :]
    tr = (rows - origin_r[label]) % texture.shape[0]
    tc = (cols - origin_c[label]) % texture.shape[1]
    return texture.ravel()[tr * texture.shape[1] + tc]


def _inner_boundaries(label: np.ndarray) -> np.ndarray:
    """Pixels of an object with a 4-neighbour of another label, bool [H, W]."""
    edge = np.zeros(label.shape, bool)
    vertical = label[1:] != label[:-1]
    horizontal = label[:, 1:] != label[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (label > 0)


def emission(maps: LabelMaps, scene: Scene, textures: Textures) -> np.ndarray:
    """Clean fluorescence channels (nuclei, cells, vesicles), float32 [3, H, W].

    Nuclei: dome profile with chromatin texture. Cells: cytoplasm thickest near the middle, dimmer
    outlines (visible borders between touching cells), excluded from the nucleus. Vesicles: flat discs
    that the PSF turns into bright puncta.
    """
    size = int(max(maps.cells.max(), maps.nuclei.max(), maps.vesicles.max())) + 1
    bright = _lookup(scene.brightness(), size)
    nuc = bright[maps.nuclei] * (0.55 + 0.45 * np.sqrt(maps.nucleus_depth))
    nuc *= _textured(maps.nuclei, scene, textures.nucleus)
    cyto = bright[maps.cells] * (0.35 + 0.65 * np.sqrt(maps.cell_depth))
    cyto *= _textured(maps.cells, scene, textures.cell)
    cyto[maps.nuclei > 0] *= 0.35
    cyto[_inner_boundaries(maps.cells)] *= 0.6
    ves = bright[maps.vesicles]
    return np.stack([nuc, cyto, ves]).astype(np.float32)


@dataclass(frozen=True)
class Camera:
    """Drawn acquisition parameters of one channel (see :class:`OpticsConfig`)."""

    psf_sigma: float
    psf_sigma_z: float
    background: float
    gradient: float
    gradient_angle: float
    vignetting: float
    photons: float
    read_noise: float
    peak_fraction: float
    dark_offset: float

    @classmethod
    def sample(cls, rng: np.random.Generator, config: OpticsConfig) -> Camera:
        return cls(
            psf_sigma=draw(rng, config.psf_sigma), psf_sigma_z=draw(rng, config.psf_sigma_z),
            background=draw(rng, config.background), gradient=draw(rng, config.gradient),
            gradient_angle=float(rng.uniform(0.0, 2.0 * np.pi)), vignetting=draw(rng, config.vignetting),
            photons=draw(rng, config.photons), read_noise=draw(rng, config.read_noise),
            peak_fraction=draw(rng, config.peak_fraction), dark_offset=draw(rng, config.dark_offset),
        )

    def fields(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Illumination (multiplies the signal) and background, float32 [H, W] each."""
        y = (np.arange(shape[0], dtype=np.float32) / max(shape[0] - 1, 1) - 0.5)[:, None]
        x = (np.arange(shape[1], dtype=np.float32) / max(shape[1] - 1, 1) - 0.5)[None, :]
        illumination = 1.0 - np.float32(2.0 * self.vignetting) * (x**2 + y**2)
        ramp = x * np.float32(np.cos(self.gradient_angle)) + y * np.float32(np.sin(self.gradient_angle))
        background = np.float32(self.background) * (1.0 + np.float32(2.0 * self.gradient) * ramp) * illumination
        return illumination, background

    def acquire(self, clean: np.ndarray, rng: np.random.Generator, bit_depth: int, z_axis: bool) -> np.ndarray:
        """Image a clean stack [N, H, W] (N frames or z-slices; blur along N only when ``z_axis``).

        The bright end of the blurred signal (99th percentile over object pixels of the stack) maps to
        ``photons`` electrons and to ``peak_fraction`` of the digital range (brighter puncta may saturate).
        Returns uint8 / uint16 [N, H, W].
        """
        if bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
        illumination, background = self.fields(clean.shape[1:])
        sigma = (self.psf_sigma_z if z_axis else 0.0, self.psf_sigma, self.psf_sigma)
        signal = ndimage.gaussian_filter(clean * illumination, sigma, mode="nearest")
        foreground = signal[:, ::2, ::2][clean[:, ::2, ::2] > 0]
        peak = max(float(np.percentile(foreground, 99.0)) if foreground.size else 0.0, 1e-6)
        expected = np.float32(self.photons) * (signal * np.float32(1.0 / peak) + background)
        electrons = shot_noise(expected, rng)
        electrons += np.float32(self.read_noise) * rng.standard_normal(electrons.shape, dtype=np.float32)
        max_value = 2**bit_depth - 1
        gain = self.peak_fraction * max_value / (self.photons * (1.0 + float(background.max())))
        digital = np.rint(electrons * np.float32(gain) + np.float32(self.dark_offset * max_value))
        return digital.clip(0, max_value).astype(np.uint8 if bit_depth == 8 else np.uint16)


def shot_noise(expected: np.ndarray, rng: np.random.Generator, exact_below: float = 25.0) -> np.ndarray:
    """Poisson counts for the expected values (float32, any shape): exact Poisson draws below
    ``exact_below`` expected counts, the rounded normal approximation ``N(lam, lam)`` above (indistinguishable
    there, and several times faster)."""
    counts = np.rint(expected + np.sqrt(expected) * rng.standard_normal(expected.shape, dtype=np.float32))
    low = expected < exact_below
    counts[low] = rng.poisson(expected[low])
    return np.maximum(counts, 0.0, out=counts)


def compose(channels: np.ndarray, mode: str, weights: tuple[float, float, float]) -> np.ndarray:
    """Clean channels [N, 3, H, W] -> what one acquisition sees: [N, 1, H, W], or [N, 3, H, W] for "rgb"
    (order red = vesicles, green = cells, blue = nuclei)."""
    if mode == "merged":
        return np.tensordot(channels, np.asarray(weights, np.float32), axes=([1], [0]))[:, None]
    if mode == "rgb":
        return channels[:, ::-1]
    index = {"nuclei": 0, "cells": 1, "vesicles": 2}.get(mode)
    if index is None:
        raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {mode!r}")
    return channels[:, index:index + 1]


def render_stack(
    channels: np.ndarray, mode: str, bit_depth: int, config: OpticsConfig, optics_rng: np.random.Generator,
    noise_rng: np.random.Generator, z_axis: bool = False,
) -> np.ndarray:
    """Clean channels [N, 3, H, W] -> digital images [N, H, W] (or [N, H, W, 3] for "rgb").

    Optics are drawn from ``optics_rng`` (one camera per output channel, shared by all N frames);
    noise comes from ``noise_rng``.
    """
    weights = tuple(draw(optics_rng, w) for w in config.merged_weights)
    mixed = compose(channels, mode, weights)
    out = [Camera.sample(optics_rng, config).acquire(mixed[:, i], noise_rng, bit_depth, z_axis)
           for i in range(mixed.shape[1])]
    return out[0] if len(out) == 1 else np.stack(out, axis=-1)
