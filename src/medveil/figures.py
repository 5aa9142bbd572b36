"""Figures: one image through every stage of the scheme."""

from __future__ import annotations

from pathlib import Path

import matplotlib

__all__ = ["pipeline_figure", "save_figure", "stage_figure"]

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from medveil.atomic import atomic_write_bytes  # noqa: E402
from medveil.keys import Preset  # noqa: E402
from medveil.obfuscator import Obfuscator  # noqa: E402


def _refuse_pinned_noise(obfuscator: Obfuscator) -> None:
    # A figure puts an image beside its obfuscation; with a pinned seed anyone could redraw the
    # noise and subtract it, so figures are drawn with fresh noise only.
    if obfuscator.noise.pinned:
        raise ValueError(
            "figures show an image beside its obfuscation, so they are drawn with fresh noise "
            "only: build the Obfuscator without noise_seed"
        )


def stage_figure(obfuscator: Obfuscator, image: np.ndarray, *, title: str | None = None) -> Figure:
    """Matplotlib figure of ``image`` (``n x n`` in [0, 1]) through every stage.

    Top row: what leaves each stage (the factor ``Z`` is ``n x k``; the output ``n x m``).
    Bottom row: the custodian's view, each factor multiplied back by the secret ``V_k^T``,
    which the recipient of the output never has. The obfuscator's noise must not be pinned.
    """
    _refuse_pinned_noise(obfuscator)
    out = obfuscator.stages(torch.as_tensor(image, dtype=torch.float32)[None])
    basis = out.truncation.basis[0].numpy()
    p = obfuscator.params
    panels = [("original", out.image[0].numpy(), None)]
    panels.append((f"rank-{p.rank} approximation", out.truncation.approximation()[0].numpy(), None))
    top = [("factor Z = U_k S_k", out.truncation.factor[0].numpy())]
    if p.preset is Preset.MULTISTAGE:
        if p.bits is not None:
            top.append((f"quantized ({p.bits} bits)", out.quantized[0].numpy()))
        if p.noise:
            top.append((f"noised (eta={p.noise:g})", out.noised[0].numpy()))
        top.append((f"projected Y ({p.left}/{p.right})", out.output[0].numpy()))
    cols = max(len(top), 2) + 1
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols, 5.6), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (name, img, _) in zip(axes[:, 0], panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    for col, (name, mat) in enumerate(top, start=1):
        ax = axes[0, col]
        ax.imshow(mat, cmap="gray", aspect="auto", interpolation="nearest")
        ax.set_title(f"{name}\n{mat.shape[0]}x{mat.shape[1]}", fontsize=9)
        if mat.shape[1] == p.rank:
            ax = axes[1, col]
            ax.imshow(np.clip(mat @ basis.T, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_title("x V_k^T (custodian only)", fontsize=8)
    fig.suptitle(title or f"medveil {p.preset} preset, key {obfuscator.fingerprint}", fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Save a figure as PNG atomically."""
    import io

    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(target, buffer.getvalue())
    return target


def pipeline_figure(
    images: np.ndarray,
    labels: list[str],
    *,
    svd: Obfuscator,
    multistage: Obfuscator,
) -> Figure:
    """One row per example image: what each stage of both presets makes of it.

    Columns: the original, its rank-k approximation (the custodian's view), the ``svd``
    preset's output ``Z = U_k S_k`` (what the prior scheme hands out), then the ``multistage``
    stages: the quantized factor, the noised factor and the projected output ``Y``. Neither
    obfuscator's noise may be pinned.
    """
    _refuse_pinned_noise(svd)
    _refuse_pinned_noise(multistage)
    batch = torch.as_tensor(images, dtype=torch.float32)
    plain = svd.stages(batch)
    staged = multistage.stages(batch)
    p = multistage.params
    columns = [
        ("original", batch, "image"),
        (f"rank-{p.rank} approximation", plain.truncation.approximation(), "image"),
        ("svd output Z", plain.output, "matrix"),
        (f"quantized ({p.bits} bits)" if p.bits else "factor Z", staged.quantized, "matrix"),
        (f"+ noise (eta={p.noise:g})", staged.noised, "matrix"),
        ("multistage output Y", staged.output, "matrix"),
    ]
    rows = len(batch)
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.1 * len(columns), 2.1 * rows + 0.3),
                             squeeze=False)
    for r in range(rows):
        for c, (name, data, kind) in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = data[r].numpy()
            if kind == "image":
                ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img, cmap="gray", aspect="auto", interpolation="nearest")
            if r == 0:
                shape = f"\n{img.shape[0]}x{img.shape[1]}"
                ax.set_title(name + shape, fontsize=8)
            if c == 0:
                ax.set_ylabel(labels[r], fontsize=8)
    fig.tight_layout()
    return fig
