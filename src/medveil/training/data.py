"""Prepared training data: the data opened, split, standardised and served, in one object.

:func:`prepare_data` opens the data (:mod:`medveil.training.sources`), plans its splits
(:mod:`medveil.training.splits`), fits the standardisation on the training split and builds
the example sets (:mod:`medveil.training.inputs`, which also holds the measurement behind
augmentation being off by default), and hands the trainer one :class:`PreparedData`. The
names of those modules are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medveil.errors import DatasetLayoutError, RunError
from medveil.store import ObfuscatedStore
from medveil.training.inputs import (
    AUGMENTATIONS,
    STATS_SAMPLE,
    ExampleSet,
    Standardisation,
    augment_batch,
    to_model_input,
)
from medveil.training.sources import (
    CACHE_BYTES,
    ArrayTable,
    DataSource,
    FolderTable,
    MemoryTable,
    obfuscate_source,
    open_data,
)
from medveil.training.splits import SplitPlan, plan_splits, stratified_holdout

__all__ = [
    "AUGMENTATIONS",
    "CACHE_BYTES",
    "STATS_SAMPLE",
    "ArrayTable",
    "DataSource",
    "ExampleSet",
    "FolderTable",
    "MemoryTable",
    "PreparedData",
    "SplitPlan",
    "Standardisation",
    "augment_batch",
    "obfuscate_source",
    "open_data",
    "plan_splits",
    "prepare_data",
    "stratified_holdout",
    "to_model_input",
]


def _array_shape(source: DataSource, *, size: int) -> tuple[int, int]:
    """The ``(n, m)`` shape of the source's arrays: a store's, or ``size`` for plaintext images
    (loaded at the model's input size)."""
    if source.kind == "obfuscated" and source.provenance.get("shape"):
        n, m = source.provenance["shape"]
        return int(n), int(m)
    table = next(iter(source.tables.values()))
    if len(table.labels):
        first = table.arrays(np.arange(1))
        return int(first.shape[1]), int(first.shape[2])
    return size, size


@dataclass(frozen=True, kw_only=True)
class PreparedData:
    """Everything the trainer reads from the data, made by :func:`prepare_data`.

    Attributes
    ----------
    source : DataSource
        The opened data (classes, kind, identity, provenance).
    plan : SplitPlan
        Which examples train, validate and test.
    standardisation : Standardisation
        The constants every example set applies (fitted on the training split, or given).
    sets : dict
        :class:`ExampleSet` by role (``train``, ``val`` and, when held out, ``test``).
    in_shape : tuple of int
        The ``(n, m)`` shape of the arrays the model's input stem reads.
    """

    source: DataSource
    plan: SplitPlan
    standardisation: Standardisation
    sets: dict[str, ExampleSet]
    in_shape: tuple[int, int]


def prepare_data(
    data: DataSource | ObfuscatedStore | str | Path,
    *,
    image_size: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    standardisation: Standardisation | None = None,
    plan: SplitPlan | None = None,
    identity: str | None = None,
) -> PreparedData:
    """Open the data, split it, fit the standardisation and build the example sets, in one go.

    Parameters
    ----------
    data : DataSource, ObfuscatedStore, str or Path
        As for :func:`open_data` (the labels are checked there).
    image_size : int
        Side at which plaintext images are loaded.
    val_fraction, test_fraction, seed
        As for :func:`plan_splits`; unused when ``plan`` is given.
    standardisation : Standardisation, optional
        Fixed constants (a pretrained model's); by default they are fitted on the training split.
    plan : SplitPlan, optional
        A saved plan (a resumed run's), used instead of a new one.
    identity : str, optional
        The identity of the data ``plan`` was made on: other data are refused before the plan
        is applied to them.

    Raises
    ------
    RunError
        ``identity`` is not the data's.
    DatasetLayoutError
        The data cannot be split, or its training split has fewer than 2 examples.
    """
    source = open_data(data, image_size=image_size)
    if identity is not None and source.identity != identity:
        raise RunError("cannot resume on different data than the run started with")
    if plan is None:
        plan = plan_splits(
            source, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    train_table, train_indices = plan.parts["train"]
    if len(train_indices) < 2:
        raise DatasetLayoutError("the training split needs at least 2 examples")
    if standardisation is None:
        # The stem reads the arrays at their own shape, so they are standardised as they are.
        standardisation = Standardisation.fit(
            source.tables[train_table], train_indices, seed=seed
        )
    sets = {
        role: ExampleSet(source.tables[table], indices, standardisation=standardisation)
        for role, (table, indices) in plan.parts.items()
    }
    return PreparedData(
        source=source, plan=plan, standardisation=standardisation, sets=sets,
        in_shape=_array_shape(source, size=image_size),
    )
