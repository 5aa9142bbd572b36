"""One privacy summary, many views: a table of attack scores as data, terminal, Markdown, HTML.

:class:`PrivacySummary` holds one row per attack run (attack, threat model, number of known
pairs: :meth:`~medveil.attacks.base.AttackResult.summary` plus ``pairs``), optionally with
leading columns that tell evaluations apart (``scheme``, ``preset``). :meth:`~PrivacySummary.cells`
lays the rows out once; :meth:`~PrivacySummary.to_rich`, :meth:`~PrivacySummary.to_markdown`
and :meth:`~PrivacySummary.to_html` only dress those cells, so the ``attack`` command, the
privacy benchmark and the study report show the same numbers the same way.

Examples
--------
>>> from medveil.attacks.summary import PrivacySummary
>>> summary = PrivacySummary.from_records([
...     {"attack": "mean_image", "threat": "A1", "pairs": None, "ssim_mean": 0.31,
...      "ssim_std": 0.05, "ssim_max": 0.4, "psnr_mean": 12.5, "psnr_unclipped_mean": 12.5,
...      "seconds": 0.2},
...     {"attack": "reid", "threat": "A2", "pairs": 100, "top1_mean": 0.9,
...      "chance_top1": 0.01, "top5_mean": 1.0, "seconds": 1.5},
... ])
>>> print(summary.to_markdown())
| attack | threat | pairs | SSIM mean ± std | SSIM max | PSNR dB | PSNR unclipped dB | top-1 (chance) | top-5 | s |
|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|
| mean_image | A1 |  | 0.310 ± 0.050 | 0.400 | 12.50 | 12.50 |  |  | 0.2 |
| reid | A2 | 100 |  |  |  |  | 0.900 (0.010) | 1.000 | 1.5 |
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.table import Table

__all__ = ["COLUMNS", "PrivacySummary"]

#: Headers of the score columns, after the group columns; ``attack`` and ``threat`` are text.
COLUMNS = (
    "attack",
    "threat",
    "pairs",
    "SSIM mean ± std",
    "SSIM max",
    "PSNR dB",
    "PSNR unclipped dB",
    "top-1 (chance)",
    "top-5",
    "s",
)


def _number(value: Any) -> float | None:
    """``value`` as a float; ``None`` for a missing value (``None``, NaN, an empty string)."""
    if value is None or value == "":
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _fixed(value: Any, digits: int) -> str:
    number = _number(value)
    if number is None:
        return ""
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{digits}f}"


@dataclass(frozen=True, kw_only=True)
class PrivacySummary:
    """Scores of attack runs, one row each, and the views of them.

    Parameters
    ----------
    rows
        One mapping per run: ``attack``, ``threat``, ``pairs`` (``None`` outside A2) and the
        metric columns of :meth:`~medveil.attacks.base.AttackResult.summary`
        (``ssim_mean``, ``top1_mean``, ``chance_top1``, ``seconds``, ...).
    groups
        Names of leading text columns (e.g. ``("scheme",)``) each row also carries.
    """

    rows: tuple[Mapping[str, Any], ...]
    groups: tuple[str, ...] = ()

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], *, groups: Sequence[str] = ()
    ) -> PrivacySummary:
        """From row mappings (``summary.json``'s ``summary`` list, the study's metrics)."""
        return cls(rows=tuple(dict(r) for r in records), groups=tuple(groups))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, groups: Sequence[str] = ()) -> PrivacySummary:
        """From :meth:`to_frame` or a ``summary.csv`` read back (NaN is a missing value)."""
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return cls.from_records(records, groups=groups)

    def to_frame(self) -> pd.DataFrame:
        """The rows as a DataFrame: the numbers, unformatted (``summary.csv``)."""
        return pd.DataFrame([dict(r) for r in self.rows])

    def header(self) -> tuple[str, ...]:
        """Column headers of every view: the group columns, then :data:`COLUMNS`."""
        return (*self.groups, *COLUMNS)

    def cells(self) -> list[tuple[str, ...]]:
        """The rows as formatted text, one tuple per row, aligned with :meth:`header`.

        Reconstruction attacks fill the SSIM and PSNR columns (SSIM to 3 decimals, PSNR in dB
        to 2), matching attacks the top-1 (with its chance level) and top-5 accuracies; the
        last column is the attack's wall time in seconds.
        """
        out = []
        for row in self.rows:
            pairs = _number(row.get("pairs"))
            cells = [str(row.get(g, "")) for g in self.groups]
            cells += [
                str(row["attack"]),
                str(row["threat"]),
                "" if pairs is None else str(int(pairs)),
            ]
            if _number(row.get("ssim_mean")) is not None:
                cells += [
                    f"{_fixed(row['ssim_mean'], 3)} ± {_fixed(row.get('ssim_std'), 3)}",
                    _fixed(row.get("ssim_max"), 3),
                    _fixed(row.get("psnr_mean"), 2),
                    _fixed(row.get("psnr_unclipped_mean"), 2),
                    "",
                    "",
                ]
            else:
                cells += [
                    "",
                    "",
                    "",
                    "",
                    f"{_fixed(row.get('top1_mean'), 3)} ({_fixed(row.get('chance_top1'), 3)})",
                    _fixed(row.get("top5_mean"), 3),
                ]
            cells.append(_fixed(row.get("seconds"), 1))
            out.append(tuple(cells))
        return out

    def _text_columns(self) -> int:
        """The leading columns that hold text (left-aligned): groups, attack, threat."""
        return len(self.groups) + 2

    def to_rich(self, *, title: str | None = None) -> Table:
        """A :class:`rich.table.Table` for the terminal."""
        table = Table(title=title)
        for i, header in enumerate(self.header()):
            table.add_column(header, justify="left" if i < self._text_columns() else "right")
        for cells in self.cells():
            table.add_row(*cells)
        return table

    def to_markdown(self) -> str:
        """A Markdown (GitHub) table, text columns left-aligned and numbers right-aligned."""
        left = self._text_columns()

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = "|" + "|".join(":---" if i < left else "---:" for i in range(len(self.header())))
        return "\n".join([line(self.header()), rule + "|", *(line(c) for c in self.cells())])

    def to_html(self, *, table_id: str = "") -> str:
        """An HTML table (in a ``div.scroll``); text cells carry ``class="l"``."""
        left = self._text_columns()

        def row(cells: Sequence[str], tag: str) -> str:
            return (
                "<tr>"
                + "".join(
                    f'<{tag} class="l">{html.escape(c)}</{tag}>'
                    if i < left
                    else f"<{tag}>{html.escape(c)}</{tag}>"
                    for i, c in enumerate(cells)
                )
                + "</tr>"
            )

        ident = f' id="{html.escape(table_id)}"' if table_id else ""
        body = "".join(row(cells, "td") for cells in self.cells())
        return (
            f'<div class="scroll"><table{ident}><thead>{row(self.header(), "th")}</thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
