"""The anatomy of the SYNTHETIC brain MRI: the MNI152 T1 template, its distance maps, slices.

The template ships inside nilearn and is read from the installed package with nibabel (no
download, no network). :func:`load_volumes` puts it on a cubic world box with room round the
brain for the synthetic skull and scalp, beside two signed distance maps (inside the brain,
inside a smoothed hull of the head) that :mod:`medveil.synthetic.brain` uses to shape the
skull and place lesions.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "AUX_STEP",
    "SELLA",
    "TEMPLATE_IN_NILEARN",
    "Plane",
    "Volumes",
    "load_volumes",
    "take_slices",
    "template_path",
]

TEMPLATE_IN_NILEARN = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
SELLA = np.array([0.0, -2.0, -30.0])  # MNI mm: the pituitary fossa, read off the template midline
_MARGIN = 32  # mm of room round the brain for the synthetic skull and scalp
AUX_STEP = 2  # mm; the distance maps that shape the skull and place lesions need no finer grid


@dataclass(frozen=True)
class Volumes:
    """The template and its distance maps on one cubic world box, at 1 mm and 2 mm."""

    t1: np.ndarray  # (L+1,)*3 uint8, template intensity
    aux: np.ndarray  # (2, L/2+1, ...) float32: signed mm inside the brain, inside the head hull
    low: np.ndarray  # world mm of the box's first corner, axes x y z
    side: float  # L, mm


@dataclass(frozen=True)
class Plane:
    axis: int  # world axis of the slice normal
    level: float  # world coordinate of the slice along that axis, mm
    origin: np.ndarray  # world mm of the image centre
    right: np.ndarray  # world unit vector along image columns
    down: np.ndarray  # world unit vector along image rows
    half_u: float  # half the field of view along columns, mm
    half_v: float



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
def load_volumes() -> Volumes:
    img = nib.load(template_path())
    if not np.allclose(img.affine[:3, :3], np.eye(3)):
        raise ValueError(f"{template_path()}: expected a 1 mm axis-aligned template")
    data = np.asarray(img.dataobj, dtype=np.uint8)
    voxels = np.argwhere(data > 0)
    first, last = voxels.min(axis=0), voxels.max(axis=0)
    side = int(np.max(last - first)) + 2 * _MARGIN
    side += -side % AUX_STEP  # the 2 mm grid must end on the same far corner
    start = (first + last) // 2 - side // 2  # box corner in template voxels
    cube = np.zeros((side + 1,) * 3, dtype=np.uint8)
    src = [slice(max(s, 0), min(s + side + 1, n)) for s, n in zip(start, data.shape, strict=True)]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True)]
    cube[tuple(dst)] = data[tuple(src)]

    brain = cube[::AUX_STEP, ::AUX_STEP, ::AUX_STEP] > 0
    # A smoothed, thresholded brain fills the sulci and the skull-base clefts: the head hull.
    hull = ndimage.gaussian_filter(brain.astype(np.float32), sigma=2.0) > 0.4
    aux = np.stack([_signed_depth(brain, AUX_STEP), _signed_depth(hull, AUX_STEP)])
    low = img.affine[:3, 3] + start
    return Volumes(t1=cube, aux=aux, low=low, side=float(side))


def take_slices(
    volume: np.ndarray, planes: list[Plane], low: np.ndarray, step: float
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
