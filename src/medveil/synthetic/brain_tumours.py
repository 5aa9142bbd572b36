"""The tumour models of the SYNTHETIC brain MRI: what each class paints onto a slice.

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

from dataclasses import dataclass

import numpy as np
import torch

from medveil.synthetic import DATASETS
from medveil.synthetic.brain_anatomy import SELLA, Plane

__all__ = [
    "GLIOMA",
    "MENINGIOMA",
    "NOTUMOR",
    "PITUITARY",
    "Lesion",
    "draw_lesion",
    "glioma",
    "meningioma",
    "pick_centre",
    "pituitary",
    "push",
]

GLIOMA, MENINGIOMA, NOTUMOR, PITUITARY = (
    DATASETS["brain-mri"].classes.index(c) for c in ("glioma", "meningioma", "notumor", "pituitary")
)


@dataclass(frozen=True)
class Lesion:
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



def _harmonics(rng: np.random.Generator, count: int, amplitude: float) -> np.ndarray:
    """Random outline harmonics k = 2..count+1 with amplitudes decaying with k."""
    k = np.arange(2, count + 2)
    amp = rng.uniform(-1, 1, count) * amplitude / k**0.7
    return np.stack([amp, rng.uniform(0, 2 * np.pi, count)])


def draw_lesion(label: int, rng: np.random.Generator) -> Lesion | None:
    if label == NOTUMOR:
        return None
    radius = rng.uniform(
        *{GLIOMA: (12.0, 26.0), MENINGIOMA: (9.0, 21.0), PITUITARY: (7.0, 14.0)}[label]
    )
    enhancing = label != GLIOMA or rng.random() < 0.7
    axes = radius * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.5)])
    # Suprasellar extension: a pituitary mass grows up out of the fossa.
    centre = SELLA + np.array([0.0, rng.uniform(-2, 2), axes[2] * rng.uniform(0.3, 0.7)])
    return Lesion(
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



def pick_centre(
    label: int, lesion: Lesion, brain: np.ndarray, hull: np.ndarray, z: np.ndarray
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



def push(
    grid: torch.Tensor, lesion: Lesion, du: torch.Tensor, dv: torch.Tensor, frame: np.ndarray
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


def glioma(
    head: torch.Tensor,
    lesion: Lesion,
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


def meningioma(
    head: torch.Tensor,
    lesion: Lesion,
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


def pituitary(
    head: torch.Tensor,
    lesion: Lesion,
    plane: Plane,
    du: torch.Tensor,
    dv: torch.Tensor,
    texture: torch.Tensor,
) -> torch.Tensor:
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
