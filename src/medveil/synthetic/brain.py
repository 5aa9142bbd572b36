"""SYNTHETIC brain-tumour MRI: slices of the MNI152 T1 template with modelled tumours.

The anatomy is the MNI152 2009 T1 template that ships inside nilearn (read from the installed
package with nibabel: no download, no network). A synthetic skull and scalp are added round a
smoothed hull of the brain, since the template is skull-stripped. Each image is an axial, coronal
or sagittal slice at a random level, turned, flipped, scaled and shifted in plane, with a random
bias field, Rician noise and contrast curve. Tumours are painted onto the slice:

- glioma: irregular, lobulated intra-axial mass deep in the hemispheres, usually with a bright
  enhancing rim round a dark necrotic core, inside a larger irregular hypointense oedema halo,
  pushing the surrounding tissue aside;
- meningioma: round, bright, homogeneous, well-circumscribed extra-axial mass whose base lies
  flat against the inner skull, often with a dural tail and a thin CSF cleft, indenting the brain;
- pituitary: midline sellar/suprasellar ellipsoid above the sella turcica, seen only on slices
  that cut it (sagittal slices near the midline, axial and coronal slices at its level);
- notumor: nothing.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medveil.synthetic import DATASETS

__all__ = ["SELLA", "TEMPLATE_IN_NILEARN", "render", "template_path"]

GLIOMA, MENINGIOMA, NOTUMOR, PITUITARY = (
    DATASETS["brain-mri"].classes.index(c) for c in ("glioma", "meningioma", "notumor", "pituitary")
)

TEMPLATE_IN_NILEARN = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
SELLA = np.array([0.0, -2.0, -30.0])  # MNI mm: the pituitary fossa, read off the template midline
_MARGIN = 32  # mm of room round the brain for the synthetic skull and scalp
_AUX_STEP = 2  # mm; the distance maps that shape the skull and place lesions need no finer grid
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
class _Volumes:
    """The template and its distance maps on one cubic world box, at 1 mm and 2 mm."""

    t1: np.ndarray  # (L+1,)*3 uint8, template intensity
    aux: np.ndarray  # (2, L/2+1, ...) float32: signed mm inside the brain, inside the head hull
    low: np.ndarray  # world mm of the box's first corner, axes x y z
    side: float  # L, mm


@dataclass(frozen=True)
class _Plane:
    axis: int  # world axis of the slice normal
    level: float  # world coordinate of the slice along that axis, mm
    origin: np.ndarray  # world mm of the image centre
    right: np.ndarray  # world unit vector along image columns
    down: np.ndarray  # world unit vector along image rows
    half_u: float  # half the field of view along columns, mm
    half_v: float


@dataclass(frozen=True)
class _Lesion:
    radius: float  # mm
    outline: np.ndarray  # (2, K) amplitudes and phases of the outline's harmonics 2..K+1
    halo: np.ndarray  # same for the oedema outline (glioma)
    halo_scale: float  # oedema radius over tumour radius
    halo_factor: float  # multiplier of tissue intensity inside the oedema
    core: float  # relative radius of the necrotic core; 0 when non-enhancing
    bright: float  # intensity of the tumour tissue
    dark: float  # intensity of the necrotic or cystic part
    push: float  # peak mass-effect displacement, mm
    tail: bool  # meningioma: dural tail
    cystic: bool  # pituitary: a cystic or necrotic part
    centre: np.ndarray | None  # pituitary: world mm; others: picked on the slice
    axes: np.ndarray  # pituitary: ellipsoid semi-axes, mm
    pick: float  # uniform draw that selects the centre among candidate points


@dataclass(frozen=True)
class _Image:
    plane: _Plane
    lesion: _Lesion | None
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


def template_path() -> Path:
    """Path of the MNI152 T1 template inside the installed nilearn (found without importing it)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed; it provides the MNI152 template")
    path = Path(next(iter(spec.submodule_search_locations))) / TEMPLATE_IN_NILEARN
    if not path.is_file():
        raise FileNotFoundError(f"MNI152 template not found in nilearn at {path}")
    return path


def _signed_depth(mask: np.ndarray, step: float) -> np.ndarray:
    """Signed distance to the mask's surface in mm, positive inside."""
    inside = ndimage.distance_transform_edt(mask, sampling=step)
    outside = ndimage.distance_transform_edt(~mask, sampling=step)
    return (inside - outside).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _volumes() -> _Volumes:
    img = nib.load(template_path())
    if not np.allclose(img.affine[:3, :3], np.eye(3)):
        raise ValueError(f"{template_path()}: expected a 1 mm axis-aligned template")
    data = np.asarray(img.dataobj, dtype=np.uint8)
    voxels = np.argwhere(data > 0)
    first, last = voxels.min(axis=0), voxels.max(axis=0)
    side = int(np.max(last - first)) + 2 * _MARGIN
    side += -side % _AUX_STEP  # the 2 mm grid must end on the same far corner
    start = (first + last) // 2 - side // 2  # box corner in template voxels
    cube = np.zeros((side + 1,) * 3, dtype=np.uint8)
    src = [slice(max(s, 0), min(s + side + 1, n)) for s, n in zip(start, data.shape, strict=True)]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True)]
    cube[tuple(dst)] = data[tuple(src)]

    brain = cube[::_AUX_STEP, ::_AUX_STEP, ::_AUX_STEP] > 0
    # A smoothed, thresholded brain fills the sulci and the skull-base clefts: the head hull.
    hull = ndimage.gaussian_filter(brain.astype(np.float32), sigma=2.0) > 0.4
    aux = np.stack([_signed_depth(brain, _AUX_STEP), _signed_depth(hull, _AUX_STEP)])
    low = img.affine[:3, 3] + start
    return _Volumes(t1=cube, aux=aux, low=low, side=float(side))


def _take_slices(
    volume: np.ndarray, planes: list[_Plane], low: np.ndarray, step: float
) -> torch.Tensor:
    """Axis-aligned slices at each plane's level, linearly interpolated: (N, C, M, M)."""
    if volume.ndim == 3:
        volume = volume[None]
    out = []
    for plane in planes:
        position = np.clip((plane.level - low[plane.axis]) / step, 0, volume.shape[1] - 1.001)
        index, weight = int(position), float(position % 1)
        pair = np.take(volume, [index, index + 1], axis=plane.axis + 1).astype(np.float32)
        pair = np.moveaxis(pair, plane.axis + 1, 0)
        out.append(pair[0] * (1 - weight) + pair[1] * weight)
    return torch.from_numpy(np.stack(out))


def _frame(plane: _Plane, vol: _Volumes) -> np.ndarray:
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


def _harmonics(rng: np.random.Generator, count: int, amplitude: float) -> np.ndarray:
    """Random outline harmonics k = 2..count+1 with amplitudes decaying with k."""
    k = np.arange(2, count + 2)
    amp = rng.uniform(-1, 1, count) * amplitude / k**0.7
    return np.stack([amp, rng.uniform(0, 2 * np.pi, count)])


def _draw_lesion(label: int, rng: np.random.Generator) -> _Lesion | None:
    if label == NOTUMOR:
        return None
    radius = rng.uniform(
        *{GLIOMA: (12.0, 26.0), MENINGIOMA: (9.0, 21.0), PITUITARY: (7.0, 14.0)}[label]
    )
    enhancing = label != GLIOMA or rng.random() < 0.7
    axes = radius * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.5)])
    # Suprasellar extension: a pituitary mass grows up out of the fossa.
    centre = SELLA + np.array([0.0, rng.uniform(-2, 2), axes[2] * rng.uniform(0.3, 0.7)])
    return _Lesion(
        radius=radius,
        outline=_harmonics(rng, 5, 0.35 if label == GLIOMA else 0.06),
        halo=_harmonics(rng, 6, 0.5),
        halo_scale=rng.uniform(1.4, 2.1),
        halo_factor=rng.uniform(0.5, 0.75),
        core=rng.uniform(0.4, 0.7) if enhancing and label == GLIOMA else 0.0,
        bright=rng.uniform(0.85, 1.05) if enhancing else rng.uniform(0.15, 0.28),
        dark=rng.uniform(0.12, 0.3),
        push=rng.uniform(0.1, 0.3) * radius if label != PITUITARY else 0.0,
        tail=label == MENINGIOMA and rng.random() < 0.6,
        cystic=label == PITUITARY and rng.random() < 0.3,
        centre=centre if label == PITUITARY else None,
        axes=axes,
        pick=rng.random(),
    )


def _draw_plane(
    label: int, lesion: _Lesion | None, rng: np.random.Generator, vol: _Volumes
) -> _Plane:
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
    return _Plane(
        axis=axis,
        level=level,
        origin=origin + shift[0] * right + shift[1] * down,
        right=right,
        down=down,
        half_u=fov * squash / 2,
        half_v=fov / squash / 2,
    )


def _draw_image(label: int, rng: np.random.Generator, vol: _Volumes) -> _Image:
    lesion = _draw_lesion(label, rng)
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


def _pick_centre(
    label: int, lesion: _Lesion, brain: np.ndarray, hull: np.ndarray, z: np.ndarray
) -> int:
    """Flat index of the coarse-grid point where a glioma or meningioma is centred."""
    r = lesion.radius
    if label == GLIOMA:
        # Intra-axial: deep in the parenchyma, preferably in the cerebral hemispheres.
        deep = brain >= max(8.0, 0.6 * r)
        choices = [deep & (z > -20), deep]
        fallback = np.argmax(brain)
    else:
        # Extra-axial and dural-based: the centre lies inside the skull by about half a radius,
        # so the disc is cut flat by the inner table (a broad dural base).
        near_dura = (hull > 0.3 * r) & (hull < 0.7 * r) & (brain < 2.0)
        choices = [near_dura & (z > -25), near_dura]
        fallback = np.argmin(np.abs(hull - 0.5 * r))
    for candidates in choices:
        flat = np.flatnonzero(candidates)
        if flat.size:
            return int(flat[int(lesion.pick * flat.size)])
    return int(fallback)


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
        at = _pick_centre(int(label), lesion, depth[i, 0].ravel(), depth[i, 1].ravel(), z.ravel())
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
    vol = _volumes()
    images = [_draw_image(int(c), rng, vol) for c, rng in zip(labels, rngs, strict=True)]
    planes = [im.plane for im in images]
    t1 = _take_slices(vol.t1, planes, vol.low, 1.0) / 255
    aux = _take_slices(vol.aux, planes, vol.low, _AUX_STEP)
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
        _push(grid[i], images[i].lesion, *offsets[i], frames[i])
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
                head[i] = _glioma(head[i], lesion, du, dv, brain[i], hull[i], texture[i])
            elif labels[i] == MENINGIOMA:
                head[i] = _meningioma(head[i], lesion, du, dv, hull[i], texture[i], csf[i])
            else:
                head[i] = _pituitary(head[i], images[i], du, dv, texture[i])
    return _acquire(head, images, size).numpy()


def _push(
    grid: torch.Tensor, lesion: _Lesion, du: torch.Tensor, dv: torch.Tensor, frame: np.ndarray
) -> None:
    """Mass effect: move one image's sampling grid (S, S, 2) towards the lesion centre, in place.

    Tissue sampled from nearer the centre looks pushed outward. The radial displacement
    push*(r/R)*exp((1-(r/R)^2)/2) peaks at r = R and folds nothing while push < 0.6 R.
    """
    if lesion.push == 0:
        return
    pull = lesion.push / lesion.radius * torch.exp(0.5 - 0.5 * (du**2 + dv**2) / lesion.radius**2)
    right, down = torch.as_tensor(frame[:, :2].T, dtype=torch.float32)
    grid -= pull[..., None] * (du[..., None] * right + dv[..., None] * down)


def _outline(du: torch.Tensor, dv: torch.Tensor, harmonics: np.ndarray) -> torch.Tensor:
    """Relative outline radius 1 + sum_k a_k cos(k theta + phi_k) at each pixel's angle."""
    theta = torch.atan2(dv, du)
    radius = torch.ones_like(theta)
    for k, (amplitude, phase) in enumerate(harmonics.T, start=2):
        radius += float(amplitude) * torch.cos(k * theta + float(phase))
    return radius


def _glioma(
    head: torch.Tensor,
    lesion: _Lesion,
    du: torch.Tensor,
    dv: torch.Tensor,
    brain: torch.Tensor,
    hull: torch.Tensor,
    texture: torch.Tensor,
) -> torch.Tensor:
    r = torch.sqrt(du**2 + dv**2)
    rel = r / (lesion.radius * _outline(du, dv, lesion.outline))
    rel_halo = r / (lesion.radius * lesion.halo_scale * _outline(du, dv, lesion.halo))
    # Oedema: an irregular hypointense halo fading into the parenchyma, confined to it.
    in_brain = (brain / 2 + 0.5).clamp(0, 1)
    halo = torch.sigmoid((1 - rel_halo + 0.15 * texture[1]) / 0.1) * in_brain
    out = head * (1 - halo * (1 - lesion.halo_factor))
    # Tumour: an enhancing rim round a necrotic core, or homogeneous when non-enhancing.
    value = lesion.bright * (1 + 0.12 * texture[0])
    if lesion.core > 0:
        value = torch.lerp(
            value, torch.full_like(value, lesion.dark), torch.sigmoid((lesion.core - rel) / 0.08)
        )
    alpha = torch.sigmoid((1 - rel) / 0.07) * (hull > 0)
    return torch.lerp(out, value, alpha)


def _meningioma(
    head: torch.Tensor,
    lesion: _Lesion,
    du: torch.Tensor,
    dv: torch.Tensor,
    hull: torch.Tensor,
    texture: torch.Tensor,
    csf: torch.Tensor,
) -> torch.Tensor:
    r = torch.sqrt(du**2 + dv**2)
    outline = lesion.radius * _outline(du, dv, lesion.outline)
    inside_skull = torch.sigmoid(hull / 0.6)
    out = head
    if lesion.tail:
        # Dural tail: enhancing thickened dura running along the inner table beyond the mass.
        along_dura = torch.sigmoid((1.7 * lesion.radius - r) / 2) * torch.exp(
            -((hull - 0.8) ** 2) / 0.8
        )
        out = torch.lerp(out, torch.full_like(out, 0.75), along_dura)
    # A thin CSF cleft round the mass, then the homogeneous, bright, sharply bounded tumour.
    out = torch.lerp(
        out, csf.expand_as(out), torch.sigmoid((outline + 1.5 - r) / 0.5) * inside_skull
    )
    value = lesion.bright * (1 + 0.04 * texture[0])
    return torch.lerp(out, value, torch.sigmoid((outline - r) / 0.6) * inside_skull)


def _pituitary(
    head: torch.Tensor, image: _Image, du: torch.Tensor, dv: torch.Tensor, texture: torch.Tensor
) -> torch.Tensor:
    lesion, plane = image.lesion, image.plane
    # Where the slice cuts the ellipsoid: its normalised radius at every pixel.
    rel2 = 0
    for j in range(3):
        across = plane.level - lesion.centre[j] if j == plane.axis else 0.0
        rel2 = rel2 + ((du * plane.right[j] + dv * plane.down[j] + across) / lesion.axes[j]) ** 2
    value = lesion.bright * (1 + 0.08 * texture[0])
    if lesion.cystic:  # a cystic or necrotic part: dark where the texture is high
        cyst = torch.sigmoid((texture[1] - 0.6) / 0.1)
        value = torch.lerp(value, torch.full_like(value, lesion.dark), cyst)
    alpha = torch.sigmoid((1 - torch.sqrt(rel2)) * lesion.radius / 0.7)
    return torch.lerp(head, value, alpha)


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
