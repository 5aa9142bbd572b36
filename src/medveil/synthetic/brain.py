"""SYNTHETIC brain-tumour MRI: slices of the MNI152 T1 template with modelled tumours.

The anatomy is the MNI152 2009 T1 template that ships inside nilearn
(:mod:`medveil.synthetic.brain_anatomy`: no download, no network). A synthetic skull and scalp
are added round a smoothed hull of the brain, since the template is skull-stripped. Each image
is an axial, coronal or sagittal slice at a random level, turned, flipped, scaled and shifted in
plane, with a random bias field, Rician noise and contrast curve. Tumours (glioma, meningioma,
pituitary, or none) are painted onto the slice by :mod:`medveil.synthetic.brain_tumours`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medveil.synthetic.brain_anatomy import (
    AUX_STEP,
    SELLA,
    TEMPLATE_IN_NILEARN,
    Plane,
    Volumes,
    load_volumes,
    take_slices,
    template_path,
)
from medveil.synthetic.brain_tumours import (
    GLIOMA,
    MENINGIOMA,
    NOTUMOR,
    PITUITARY,
    Lesion,
    draw_lesion,
    glioma,
    meningioma,
    pick_centre,
    pituitary,
    push,
)

__all__ = [
    "GLIOMA",
    "MENINGIOMA",
    "NOTUMOR",
    "PITUITARY",
    "SELLA",
    "TEMPLATE_IN_NILEARN",
    "render",
    "template_path",
]

_COARSE = 48  # side of the coarse grid on which lesion centres are picked

# Slice orientations: the world axis of the slice normal, and the world directions of image
# right and image down before the in-plane turn (world axes x = left-right, y = posterior-
# anterior, z = inferior-superior).
_NORMAL_AXIS = (2, 1, 0)  # axial, coronal, sagittal
_RIGHT_DOWN = np.array(
    [
        [[1, 0, 0], [0, -1, 0]],  # axial: anterior at the top
        [[1, 0, 0], [0, 0, -1]],  # coronal: superior at the top
        [[0, -1, 0], [0, 0, -1]],  # sagittal: anterior on the left
    ],
    dtype=np.float64,
)
_LEVELS = ((-15.0, 62.0), (-75.0, 38.0), (-45.0, 45.0))  # plausible slice levels, mm

# Non-brain tissue outside the head hull, T1 look (mm outside the hull -> intensity): CSF and
# dura, inner table, diploe, outer table, bright subcutaneous fat, skin, air.
_SKULL_MM = (0.0, 1.0, 2.0, 3.0, 4.5, 5.5, 6.5, 9.5, 10.5, 11.5)
_SKULL_VALUE = (0.08, 0.04, 0.03, 0.32, 0.30, 0.03, 0.72, 0.68, 0.45, 0.0)
_SKULL_STEP = 0.05  # mm between entries of the lookup table built from the profile above
_SKULL_TABLE = torch.tensor(
    np.interp(np.arange(0, _SKULL_MM[-1] + 2 * _SKULL_STEP, _SKULL_STEP), _SKULL_MM, _SKULL_VALUE),
    dtype=torch.float32,
)


@dataclass(frozen=True)
class _Image:
    plane: Plane
    lesion: Lesion | None
    texture: np.ndarray  # (2, 10, 10) Gaussian, smoothed into tumour texture
    bias: np.ndarray  # (3, 3) Gaussian, smoothed into the bias field
    bias_strength: float
    noise_seed: int
    noise_sigma: float
    gamma: float
    gain: float
    csf: float
    white_matter: float  # brightness of the template's brightest tissue (post-contrast T1 look)
    skull_scale: float  # skull and scalp thickness factor



def _frame(plane: Plane, vol: Volumes) -> np.ndarray:
    """Affine map (2, 3) from in-plane mm (u, v, 1) to grid_sample coordinates of the slice.

    A slice across axis ``a`` keeps the other two world axes, in order, as (rows, columns);
    grid coordinates are (column, row), normalised to [-1, 1] over the box (align_corners=True).
    """
    rows, cols = (i for i in range(3) if i != plane.axis)
    scale = 2 / vol.side
    corner = plane.origin - vol.low
    return np.array(
        [
            [scale * plane.right[cols], scale * plane.down[cols], scale * corner[cols] - 1],
            [scale * plane.right[rows], scale * plane.down[rows], scale * corner[rows] - 1],
        ]
    )


def _grid(images: list[_Image], frames: np.ndarray, size: int) -> torch.Tensor:
    """Sampling grid (N, size, size, 2) of every image's pixel centres."""
    half = np.array([[im.plane.half_u, im.plane.half_v, 1.0] for im in images])
    theta = torch.as_tensor(frames * half[:, None, :], dtype=torch.float32)
    return F.affine_grid(theta, [len(images), 1, size, size], align_corners=False)


def _axis_mm(images: list[_Image], size: int) -> tuple[np.ndarray, np.ndarray]:
    """In-plane mm of the pixel centres along columns (u) and rows (v), each (N, size)."""
    steps = (np.arange(size) + 0.5) / size * 2 - 1
    u = np.array([steps * im.plane.half_u for im in images])
    v = np.array([steps * im.plane.half_v for im in images])
    return u, v



def _draw_plane(
    label: int, lesion: Lesion | None, rng: np.random.Generator, vol: Volumes
) -> Plane:
    orientation = int(rng.integers(3))
    axis = _NORMAL_AXIS[orientation]
    right, down = _RIGHT_DOWN[orientation]
    turn = np.deg2rad(rng.uniform(-12, 12))
    right, down = (
        np.cos(turn) * right + np.sin(turn) * down,
        np.cos(turn) * down - np.sin(turn) * right,
    )
    if rng.random() < 0.3:
        right = -right
    # Slices through the sella: always for pituitary tumours (else the tumour is not seen), and
    # for a share of the others, so that the slice level alone does not give the class away.
    if label == PITUITARY or rng.random() < 0.2:
        fossa = lesion.centre if lesion is not None and lesion.centre is not None else SELLA
        reach = lesion.axes[axis] if lesion is not None else rng.uniform(6, 16)
        level = fossa[axis] + rng.uniform(-0.45, 0.45) * reach
    else:
        level = rng.uniform(*_LEVELS[orientation])
    origin = vol.low + vol.side / 2
    origin[axis] = level
    fov = rng.uniform(195, 245)
    squash = rng.uniform(0.93, 1.07)  # head shapes differ: anisotropic in-plane scale
    shift = rng.uniform(-10, 10, 2)
    return Plane(
        axis=axis,
        level=level,
        origin=origin + shift[0] * right + shift[1] * down,
        right=right,
        down=down,
        half_u=fov * squash / 2,
        half_v=fov / squash / 2,
    )


def _draw_image(label: int, rng: np.random.Generator, vol: Volumes) -> _Image:
    lesion = draw_lesion(label, rng)
    return _Image(
        plane=_draw_plane(label, lesion, rng, vol),
        lesion=lesion,
        texture=rng.standard_normal((2, 10, 10), dtype=np.float32),
        bias=rng.standard_normal((3, 3), dtype=np.float32),
        bias_strength=rng.uniform(0.05, 0.3),
        noise_seed=int(rng.integers(2**62)),
        noise_sigma=rng.uniform(0.008, 0.04),
        gamma=rng.uniform(0.75, 1.3),
        gain=rng.uniform(0.9, 1.1),
        csf=rng.uniform(0.05, 0.1),
        white_matter=rng.uniform(0.55, 0.72),
        skull_scale=rng.uniform(0.85, 1.2),
    )


def _per_image(items: list, get: Callable[[object], object]) -> torch.Tensor:
    """A per-image scalar as an (N, 1, 1) tensor, ready to broadcast over pixels."""
    return torch.as_tensor(np.array([get(it) for it in items]), dtype=torch.float32)[:, None, None]



def _lesion_centres(
    images: list[_Image], labels: np.ndarray, aux: torch.Tensor, frames: np.ndarray
) -> np.ndarray:
    """In-plane (u, v) mm of each lesion centre, (N, 2); zero where there is none."""
    coarse = _grid(images, frames, _COARSE)
    depth = F.grid_sample(aux, coarse, padding_mode="border", align_corners=True).numpy()
    u, v = _axis_mm(images, _COARSE)
    centres = np.zeros((len(images), 2))
    for i, (im, label) in enumerate(zip(images, labels, strict=True)):
        lesion, plane = im.lesion, im.plane
        if lesion is None:
            continue
        if lesion.centre is not None:  # pituitary: fixed in the world, projected onto the slice
            offset = lesion.centre - plane.origin
            centres[i] = offset @ plane.right, offset @ plane.down
            continue
        z = plane.origin[2] + u[i][None, :] * plane.right[2] + v[i][:, None] * plane.down[2]
        at = pick_centre(int(label), lesion, depth[i, 0].ravel(), depth[i, 1].ravel(), z.ravel())
        centres[i] = u[i][at % _COARSE], v[i][at // _COARSE]
    return centres


def _skull(outside_mm: torch.Tensor) -> torch.Tensor:
    """Skull and scalp intensity at mm outside the head hull (fine table lookup)."""
    index = (outside_mm * (1 / _SKULL_STEP)).clamp_(0, len(_SKULL_TABLE) - 1).long()
    return _SKULL_TABLE[index]


def render(
    labels: np.ndarray, rngs: list[np.random.Generator], size: int, *, lesions: bool = True
) -> np.ndarray:
    """Render SYNTHETIC brain MRI slices, one per label.

    Parameters
    ----------
    labels : numpy.ndarray
        Class index of each image, in the order of ``DATASETS["brain-mri"].classes``.
    rngs : list of numpy.random.Generator
        One generator per image; the image is a function of its generator's state and ``size``.
    size : int
        Side of the square images in pixels.
    lesions : bool, default True
        False renders exactly the same slices without tumours or mass effect (to check the
        lesion models against their tumour-free base).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(N, size, size)``, values in [0, 1].
    """
    vol = load_volumes()
    images = [_draw_image(int(c), rng, vol) for c, rng in zip(labels, rngs, strict=True)]
    planes = [im.plane for im in images]
    t1 = take_slices(vol.t1, planes, vol.low, 1.0) / 255
    aux = take_slices(vol.aux, planes, vol.low, AUX_STEP)
    frames = np.array([_frame(p, vol) for p in planes])
    grid = _grid(images, frames, size)
    # Border padding: the distance maps go on falling outside the box (air, not CSF).
    depth = F.grid_sample(aux, grid, padding_mode="border", align_corners=True)
    brain, hull = depth[:, 0], depth[:, 1]

    u, v = _axis_mm(images, size)
    centres = _lesion_centres(images, labels, aux, frames)
    offsets = [  # per image: mm from the lesion centre along columns (1, S) and rows (S, 1)
        (
            torch.as_tensor(u[i] - cu, dtype=torch.float32)[None, :],
            torch.as_tensor(v[i] - cv, dtype=torch.float32)[:, None],
        )
        for i, (cu, cv) in enumerate(centres)
    ]
    lesion_ids = [i for i, im in enumerate(images) if im.lesion is not None] if lesions else []
    for i in lesion_ids:
        push(grid[i], images[i].lesion, *offsets[i], frames[i])
    # On post-contrast T1, enhancing tumour outshines white matter: the template is dimmed.
    tissue = F.grid_sample(t1, grid, align_corners=True)[:, 0]
    tissue = tissue * _per_image(images, lambda im: im.white_matter)

    csf = _per_image(images, lambda im: im.csf)
    skull = _skull(hull * _per_image(images, lambda im: -1 / im.skull_scale))
    head = torch.where(hull > 0, torch.maximum(tissue, csf), skull)
    if lesion_ids:
        texture = F.interpolate(
            torch.from_numpy(np.stack([im.texture for im in images])),
            size=(size, size),
            mode="bilinear",
        )
        for i in lesion_ids:
            du, dv = offsets[i]
            lesion = images[i].lesion
            if labels[i] == GLIOMA:
                head[i] = glioma(head[i], lesion, du, dv, brain[i], hull[i], texture[i])
            elif labels[i] == MENINGIOMA:
                head[i] = meningioma(head[i], lesion, du, dv, hull[i], texture[i], csf[i])
            else:
                head[i] = pituitary(head[i], lesion, images[i].plane, du, dv, texture[i])
    return _acquire(head, images, size).numpy()



def _acquire(head: torch.Tensor, images: list[_Image], size: int) -> torch.Tensor:
    """Bias field, Rician noise and contrast: what the scanner adds to the ideal image."""
    coarse = torch.from_numpy(np.stack([im.bias for im in images]))[:, None]
    bias = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    image = head * torch.exp(_per_image(images, lambda im: im.bias_strength) * bias)
    generator = torch.Generator()
    noise = torch.empty((len(images), 2, size, size))
    for i, im in enumerate(images):
        generator.manual_seed(im.noise_seed)
        torch.randn((2, size, size), generator=generator, out=noise[i])
    sigma = _per_image(images, lambda im: im.noise_sigma)
    # The magnitude of a complex signal with Gaussian noise in both channels is Rician.
    image = torch.sqrt((image + sigma * noise[:, 0]) ** 2 + (sigma * noise[:, 1]) ** 2)
    gamma = _per_image(images, lambda im: im.gamma)
    gain = _per_image(images, lambda im: im.gain)
    return (gain * image**gamma).clamp(0, 1)
