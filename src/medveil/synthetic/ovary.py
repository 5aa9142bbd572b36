"""SYNTHETIC B-mode ultrasound of an ovary, polycystic ("infected") or normal ("notinfected").

Each image imitates a transvaginal scan. A geometric scene (pelvic soft tissue with a smooth
random texture, an elliptical ovary with its stroma and capsule, anechoic follicles) is sampled on
the probe's polar grid (range x beam angle). There it becomes echoes the way a scanner forms them:
scatterer amplitudes with complex Gaussian (fully developed) speckle, blurred by an anisotropic
point-spread function (wider across beams than along them), an envelope (Rayleigh statistics), a
bright near field under the probe, depth attenuation left over after time-gain compensation,
brighter echoes behind fluid (posterior acoustic enhancement), and log compression. The polar
image is then scan-converted into a fan-shaped sector; everything outside it is black.

- infected (polycystic ovary): an enlarged ovary with bright stroma and 10-20 small follicles,
  2-9 mm across, in a ring under the capsule ("string of pearls");
- notinfected: a normal ovary with 1-6 follicles scattered through it and, half the time, one
  larger dominant follicle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medveil.synthetic import DATASETS

__all__ = ["render"]

INFECTED, NOTINFECTED = (DATASETS["ovary-us"].classes.index(c) for c in ("infected", "notinfected"))

_FLUID_ECHO = 0.002  # echo strength of follicular fluid relative to bright tissue (anechoic)
_EDGE_MM = 0.35  # softness of follicle walls, mm
_TOP_DB = 20.0  # echo level shown white; bright speckle peaks sit some dB below


@dataclass(frozen=True)
class _Scan:
    half_angle: float  # radians either side of the probe axis
    probe: float  # radius of the probe face (apex to first sample), mm
    depth: float  # imaged depth below the probe face, mm
    width: float  # width (and height) of the image, mm
    top: float  # depth from the apex of the image's top edge, mm
    texture: np.ndarray  # (14, 6) Gaussian (range x angle), smoothed into tissue layers
    tissue: float  # echo level of the surrounding soft tissue
    ovary: np.ndarray  # centre x, centre y, semi-axis a, semi-axis b, rotation (rad)
    stroma: float  # echo level of the ovarian stroma
    capsule: float  # extra echo of the ovarian capsule
    follicles: np.ndarray  # (F, 3): centre x, centre y (mm from the apex), radius (mm)
    attenuation: float  # residual two-way attenuation after time-gain compensation, per mm
    enhancement: float  # echo gain behind fluid, per mm of fluid crossed
    lateral_blur: float  # point-spread width across beams, pixels
    dynamic_range: float  # dB shown between black and white
    gain: float  # dB added before compression
    noise_seed: int


def _ellipse_points(
    ovary: np.ndarray, radii: np.ndarray, where: np.ndarray, angle: np.ndarray
) -> np.ndarray:
    """Centres (F, 2) at ellipse parameter ``angle`` and relative radius ``where`` in the ovary.

    The ellipse is shrunk by each follicle's radius, so the follicle stays inside the capsule.
    """
    cx, cy, a, b, rot = ovary
    p = (a - radii) * where * np.cos(angle)
    q = (b - radii) * where * np.sin(angle)
    return np.stack(
        [cx + p * np.cos(rot) - q * np.sin(rot), cy + p * np.sin(rot) + q * np.cos(rot)], 1
    )


def _draw_follicles(label: int, ovary: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if label == INFECTED:
        # A ring of small follicles just under the capsule.
        count = int(rng.integers(10, 21))
        radii = rng.uniform(1.0, 4.5, count)
        step = 2 * np.pi / count
        angle = rng.uniform(0, 2 * np.pi) + step * (
            np.arange(count) + rng.uniform(-0.3, 0.3, count)
        )
        gap = rng.uniform(0.3, 1.2, count)
        where = 1 - gap / (np.minimum(ovary[2], ovary[3]) - radii)
        centres = _ellipse_points(ovary, radii, where, angle)
    else:
        count = int(rng.integers(1, 7))
        radii = rng.uniform(1.5, 4.5, count)
        if rng.random() < 0.5:  # a dominant follicle
            radii = np.append(radii, rng.uniform(6.0, 10.0))
        where = np.sqrt(rng.uniform(0, 0.6, len(radii)))
        centres = _ellipse_points(ovary, radii, where, rng.uniform(0, 2 * np.pi, len(radii)))
    return np.column_stack([centres, radii])


def _draw_scan(label: int, rng: np.random.Generator) -> _Scan:
    half_angle = np.deg2rad(rng.uniform(50, 68))
    probe = rng.uniform(7, 12)
    depth = rng.uniform(45, 70)
    a = rng.uniform(15, 22) if label == INFECTED else rng.uniform(12, 19)  # PCOS: enlarged
    b = a * rng.uniform(0.6, 0.85)
    ovary = np.array(
        [
            rng.uniform(-0.12, 0.12) * depth,
            probe + depth * rng.uniform(0.42, 0.58),
            a,
            b,
            np.deg2rad(rng.uniform(-25, 25)),
        ]
    )
    follicles = _draw_follicles(label, ovary, rng)
    if label == NOTINFECTED:  # room for a dominant follicle
        ovary[2:4] = np.maximum(ovary[2:4], follicles[:, 2].max() + 2.5)
    return _Scan(
        half_angle=half_angle,
        probe=probe,
        depth=depth,
        width=(probe + depth) * rng.uniform(1.0, 1.15),
        top=probe * rng.uniform(0.35, 0.8),
        texture=rng.standard_normal((14, 6), dtype=np.float32),
        tissue=rng.uniform(0.12, 0.3),
        ovary=ovary,
        stroma=rng.uniform(0.5, 0.9) if label == INFECTED else rng.uniform(0.35, 0.75),
        capsule=rng.uniform(0.1, 0.5),
        follicles=follicles,
        attenuation=rng.uniform(0.004, 0.02),
        enhancement=rng.uniform(0.02, 0.05),
        lateral_blur=rng.uniform(1.2, 2.2),
        dynamic_range=rng.uniform(42, 54),
        gain=rng.uniform(-3, 3),
        noise_seed=int(rng.integers(2**62)),
    )


def _per_scan(scans: list[_Scan], get: Callable[[_Scan], float]) -> torch.Tensor:
    """A per-image scalar as an (N, 1, 1) tensor, ready to broadcast over pixels."""
    return torch.tensor([get(s) for s in scans], dtype=torch.float32)[:, None, None]


def _polar_axes(scan: _Scan, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranges (mm from the apex) and beam angles of a polar grid with ``samples`` of each."""
    ranges = scan.probe + np.linspace(0, scan.depth, samples)
    angles = np.linspace(-scan.half_angle, scan.half_angle, samples)
    return ranges, angles


def _fluid(scan: _Scan, samples: int) -> np.ndarray:
    """Fraction of follicular fluid on the polar grid (samples, samples), follicle by follicle.

    Each follicle is drawn only inside its bounding box in (range, angle), which keeps the cost
    per follicle small whatever the image size.
    """
    ranges, angles = _polar_axes(scan, samples)
    out = np.zeros((samples, samples), dtype=np.float32)
    for fx, fy, radius in scan.follicles:
        dist = np.hypot(fx, fy)
        reach = radius + 3 * _EDGE_MM
        r_lo, r_hi = np.searchsorted(ranges, [dist - reach, dist + reach])
        spread = np.arcsin(min(1.0, reach / max(dist, reach)))
        a_lo, a_hi = np.searchsorted(angles, np.arctan2(fx, fy) + np.array([-spread, spread]))
        if r_lo >= r_hi or a_lo >= a_hi:
            continue  # outside the sector
        r = ranges[r_lo:r_hi, None]
        t = angles[None, a_lo:a_hi]
        inside = (radius - np.hypot(r * np.sin(t) - fx, r * np.cos(t) - fy)) / _EDGE_MM
        box = out[r_lo:r_hi, a_lo:a_hi]
        np.maximum(box, 1 / (1 + np.exp(-inside)), out=box)
    return out


def _scene(scans: list[_Scan], samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Echo strength and fluid fraction on each scan's polar grid, each (N, samples, samples)."""
    axes = [_polar_axes(s, samples) for s in scans]
    r = torch.tensor(np.array([a[0] for a in axes]), dtype=torch.float32)[:, :, None]
    t = torch.tensor(np.array([a[1] for a in axes]), dtype=torch.float32)[:, None, :]
    x, y = r * torch.sin(t), r * torch.cos(t)

    coarse = torch.from_numpy(np.stack([s.texture for s in scans]))[:, None]
    texture = F.interpolate(coarse, size=(samples, samples), mode="bicubic")[:, 0]
    echo = _per_scan(scans, lambda s: s.tissue) * torch.exp(0.7 * texture)

    # The ovary: rotated-ellipse coordinates, relative radius rho (1 on the capsule).
    cx, cy, a, b, rot = (_per_scan(scans, lambda s, k=k: s.ovary[k]) for k in range(5))
    dx, dy = x - cx, y - cy
    p = dx * torch.cos(rot) + dy * torch.sin(rot)
    q = dy * torch.cos(rot) - dx * torch.sin(rot)
    rho = torch.sqrt((p / a) ** 2 + (q / b) ** 2)
    inside = torch.sigmoid((1 - rho) * b / 0.5)
    stroma = _per_scan(scans, lambda s: s.stroma) * torch.exp(0.1 * texture)
    echo = torch.lerp(echo, stroma, inside)
    echo = echo + _per_scan(scans, lambda s: s.capsule) * torch.exp(-(((rho - 1) * b / 0.8) ** 2))
    # Reverberation under the probe face makes the near field bright.
    echo = echo + 0.6 * torch.exp(-(r - _per_scan(scans, lambda s: s.probe)) / 1.5)

    fluid = torch.from_numpy(np.stack([_fluid(s, samples) for s in scans]))
    return torch.lerp(echo, torch.full_like(echo, _FLUID_ECHO), fluid), fluid


def _blur_kernels(scans: list[_Scan]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image point-spread kernels along range (N, 1, 5, 1) and across beams (N, 1, 1, 9).

    Normalised to unit energy, so blurred speckle keeps the echo strength as its mean power.
    """

    def gaussian(sigma: np.ndarray, half: int) -> torch.Tensor:
        k = np.exp(-0.5 * (np.arange(-half, half + 1)[None, :] / sigma[:, None]) ** 2)
        return torch.tensor(k / np.sqrt((k**2).sum(1, keepdims=True)), dtype=torch.float32)

    axial = gaussian(np.full(len(scans), 0.8), 2)
    lateral = gaussian(np.array([s.lateral_blur for s in scans]), 4)
    return axial[:, None, :, None], lateral[:, None, None, :]


def _speckle(echo: torch.Tensor, scans: list[_Scan]) -> torch.Tensor:
    """Envelope of complex Gaussian scattering with strength ``echo``, seen through the PSF."""
    n, size = echo.shape[0], echo.shape[-1]
    generator = torch.Generator()
    field = torch.empty((n, 2, size, size))
    for i, s in enumerate(scans):
        generator.manual_seed(s.noise_seed)
        torch.randn((2, size, size), generator=generator, out=field[i])
    field = field * torch.sqrt(echo)[:, None]
    axial, lateral = _blur_kernels(scans)
    # Grouped convolutions apply each image's own kernels to its real and imaginary parts.
    field = field.reshape(1, 2 * n, size, size)
    field = F.conv2d(field, axial.repeat_interleave(2, 0), padding=(2, 0), groups=2 * n)
    field = F.conv2d(field, lateral.repeat_interleave(2, 0), padding=(0, 4), groups=2 * n)
    field = field.reshape(n, 2, size, size)
    return torch.sqrt(field[:, 0] ** 2 + field[:, 1] ** 2)


def _scan_convert(polar: torch.Tensor, scans: list[_Scan]) -> torch.Tensor:
    """Resample polar images (N, S, S) onto the square image; black outside the sector."""
    size = polar.shape[-1]
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    width = _per_scan(scans, lambda s: s.width)
    x = (steps[None, None, :] - 0.5) * width
    y = _per_scan(scans, lambda s: s.top) + steps[None, :, None] * width
    r = torch.sqrt(x**2 + y**2)
    beam = torch.atan2(x, y) / _per_scan(scans, lambda s: s.half_angle)
    probe, depth = _per_scan(scans, lambda s: s.probe), _per_scan(scans, lambda s: s.depth)
    grid = torch.stack([beam, (r - probe) / depth * 2 - 1], dim=-1)
    return F.grid_sample(polar[:, None], grid, mode="bilinear", align_corners=True)[:, 0]


def render(labels: np.ndarray, rngs: list[np.random.Generator], size: int) -> np.ndarray:
    """Render SYNTHETIC ovary ultrasound images, one per label.

    Parameters
    ----------
    labels : numpy.ndarray
        Class index of each image, in the order of ``DATASETS["ovary-us"].classes``.
    rngs : list of numpy.random.Generator
        One generator per image; the image is a function of its generator's state and ``size``.
    size : int
        Side of the square images in pixels.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(N, size, size)``, values in [0, 1].
    """
    scans = [_draw_scan(int(c), rng) for c, rng in zip(labels, rngs, strict=True)]
    # The scene is smooth: half resolution is enough; speckle needs the full grid.
    echo, fluid = _scene(scans, max(size // 2, 16))
    echo, fluid = (
        F.interpolate(m[:, None], size=(size, size), mode="bilinear", align_corners=True)[:, 0]
        for m in (echo, fluid)
    )
    envelope = _speckle(echo, scans)
    # Along each beam (down the rows): attenuation left after time-gain compensation, and
    # enhancement behind the fluid crossed so far.
    mm = _per_scan(scans, lambda s: s.depth / (size - 1))
    below = torch.arange(size, dtype=torch.float32)[None, :, None] * mm
    crossed = torch.cumsum(fluid, dim=1) * mm
    log_gain = (
        _per_scan(scans, lambda s: -s.attenuation) * below
        + _per_scan(scans, lambda s: s.enhancement) * crossed
    )
    decibels = 20 * torch.log10(envelope + 1e-6) + (20 / np.log(10)) * log_gain
    decibels = decibels + _per_scan(scans, lambda s: s.gain)
    polar = ((decibels - _TOP_DB) / _per_scan(scans, lambda s: s.dynamic_range) + 1).clamp(0, 1)
    return _scan_convert(polar, scans).numpy()
