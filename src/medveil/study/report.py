"""``report.html``: a self-contained page (figures embedded) built from a run's saved metrics.

Nothing is recomputed here: :func:`write_report` reads ``metrics.json`` (gathering it first
from the steps' files with :func:`~medveil.study.metrics.collect_metrics`) and the PNGs the steps
wrote, so ``medveil report RUN_DIR`` rebuilds the page in a second.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from medveil.atomic import atomic_write_bytes
from medveil.attacks import PrivacySummary, attack_specs
from medveil.study.metrics import collect_metrics
from medveil.study.tradeoff import tradeoff_figure, tradeoff_points

__all__ = ["render_report", "write_report"]

_CSS = """
:root { --fg:#1d2433; --muted:#5b6475; --line:#d9dee7; --bg:#f6f8fb; --ok:#1a7f37;
        --bad:#b42318; --na:#6b7280; --accent:#2450a6; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#16233d; color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 6px; font-size:26px; }
header p { margin:2px 0; color:#c9d3e6; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:10px 40px; position:sticky;
      top:0; z-index:1; }
nav a { margin-right:18px; color:var(--accent); text-decoration:none; font-weight:600; }
main { max-width:1180px; margin:0 auto; padding:10px 40px 60px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 24px;
          margin:22px 0; }
h2 { margin:4px 0 12px; font-size:20px; }
h3 { margin:18px 0 8px; font-size:16px; }
p.note { color:var(--muted); margin:6px 0 12px; }
.callout { background:#fff8e6; border:1px solid #f0d48a; border-radius:8px; padding:10px 14px;
           margin:12px 0; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; margin:8px 0 14px; font-size:14px; }
th, td { border-bottom:1px solid var(--line); padding:5px 10px; text-align:right;
         white-space:nowrap; }
th { background:#eef2f8; font-weight:600; }
td.l, th.l { text-align:left; }
/* Text cells wrap, so that a wide table keeps its last column (a verdict) in view. */
td.l { white-space:normal; min-width:8em; }
tr:nth-child(even) td { background:#fafbfd; }
.badge { display:inline-block; padding:1px 9px; border-radius:10px; font-size:12px;
         font-weight:700; color:#fff; }
.badge.met { background:var(--ok); } .badge.not { background:var(--bad); }
.badge.na { background:var(--na); }
img.fig { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px;
          background:#fff; display:block; margin:8px 0; }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:18px; }
/* A cell wider than its column scrolls instead of running under its neighbour. */
.grid > div { min-width:0; overflow-x:auto; }
pre { background:#f3f5f9; border:1px solid var(--line); border-radius:6px; padding:10px;
      overflow-x:auto; font-size:12.5px; }
footer { color:var(--muted); text-align:center; font-size:13px; padding:20px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return _e(value)


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, left: int = 1, table_id: str = ""
) -> str:
    """An HTML table; the first ``left`` columns are text (left-aligned), cells pre-formatted."""
    ident = f' id="{table_id}"' if table_id else ""
    head = "".join(
        f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="l">{cell}</td>' if i < left else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _badge(met: bool | None) -> str:
    if met is None:
        return '<span class="badge na">not run</span>'
    return '<span class="badge met">met</span>' if met else '<span class="badge not">not met</span>'


def _image(path: Path, alt: str) -> str:
    if not path.is_file():
        return f'<p class="note">({_e(alt)}: figure not produced)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="fig" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _claims_section(metrics: dict[str, Any]) -> str:
    rows = [
        (_e(c["claim"]), _e(c["thesis"]), _e(c["ours"]), _badge(c["met"])) for c in metrics["claims"]
    ]
    met = sum(1 for c in metrics["claims"] if c["met"] is True)
    tested = sum(1 for c in metrics["claims"] if c["met"] is not None)
    return (
        '<section id="claims"><h2>The thesis\'s claims beside this run</h2>'
        f'<p class="note">{met} of {tested} measured claims met. Attacks are compared at their '
        "worst case over the threat models run (the attacker picks the setting that suits "
        "them).</p>"
        + _table(("claim", "thesis", "this run", "verdict"), rows, left=3, table_id="claims-table")
        + "</section>"
    )


def _param(value: Any) -> str:
    """A key parameter as a cell: ``off`` for a stage switched off (``None``)."""
    return "off" if value is None else _e(value)


def _pipeline_section(run_dir: Path, metrics: dict[str, Any]) -> str:
    rows = []
    for preset, params in metrics["key_params"].items():
        rows.append((
            _e(preset), *(_param(params.get(name)) for name in (
                "size", "rank", "bits", "noise", "dp_epsilon", "left", "right")),
            _e(metrics["study"]["keys"].get(preset, "")),
        ))
    return (
        '<section id="pipeline"><h2>The pipeline, stage by stage</h2>'
        '<p class="note">One image per class. The rank-k approximation is the custodian\'s '
        "view (it needs the image's own right singular vectors); the recipient of the data "
        "sees only the <em>output</em> columns.</p>"
        + (_image(run_dir / "figures" / "pipeline.png", "pipeline on example images")
           if {"svd", "multistage"} <= set(metrics["presets"]) else
           '<p class="note">(No figure: it sets the <code>multistage</code> stages beside the '
           "<code>svd</code> output, and this run's presets leave one of them out.)</p>")
        + _table(("preset", "n", "k", "bits", "eta", "DP epsilon", "R_L", "R_R",
                  "key fingerprint"), rows, left=1, table_id="params-table")
        + "</section>"
    )


#: What each stem does, for the utility note (the stems a run recorded, in their words).
_STEM_WORDS = {
    "linear": "a learned two-sided linear stem (<code>linear</code>: L·Y·R, started as a resize, "
    "able to absorb the key's projection)",
    "fitted": "a learned two-sided linear stem started on the training arrays' principal axes "
    "(<code>fitted</code>)",
    "resize": "a fixed resize (<code>resize</code>)",
}


def _stem_note(utility: list[dict[str, Any]]) -> str:
    """Which stems the runs used, on obfuscated arrays and on plaintext, from what they recorded."""
    def stems(rows: list[dict[str, Any]]) -> str:
        names = dict.fromkeys(r.get("stem") or "resize" for r in rows)
        return " or ".join(_STEM_WORDS.get(n, f"the <code>{_e(n)}</code> stem") for n in names)

    obfuscated = [r for r in utility if r["scheme"] != "plaintext"]
    plain = [r for r in utility if r["scheme"] == "plaintext"]
    parts = []
    if obfuscated:
        parts.append(f"On obfuscated arrays the model reads the array through {stems(obfuscated)}")
    if plain:
        parts.append(f"on plaintext through {stems(plain)}")
    note = "; ".join(parts)
    return note[:1].upper() + note[1:] + "." if note else ""


def _utility_section(run_dir: Path, metrics: dict[str, Any]) -> str:
    utility = metrics["utility"]
    schemes = list(dict.fromkeys(r["scheme"] for r in utility))
    models = list(dict.fromkeys(r["model"] for r in utility))
    by = {(r["scheme"], r["model"]): r for r in utility}
    summary_rows = []
    for model in models:
        cells = [_e(model)]
        for scheme in schemes:
            r = by.get((scheme, model))
            cells += [_num(r["accuracy"]), _num(r["macro_f1"])] if r else ["", ""]
        summary_rows.append(cells)
    header = ["model"] + [f"{s} {m}" for s in schemes for m in ("accuracy", "macro-F1")]
    detail = [
        (_e(r["scheme"]), _e(r["model"]), _e(r.get("stem") or "resize"), _e(r["input_size"]),
         _e(r["epochs"]),
         _e(r["test_images"]), _num(r["accuracy"]), _num(r["macro_f1"]), _num(r["macro_auc"]),
         _num(r["train_seconds"], 0))
        for r in utility
    ]
    config = metrics["config"]["training"]
    parts = [
        '<section id="utility"><h2>Utility: classifiers trained on obfuscated images</h2>',
        f'<p class="note">Same split, same seed and same budget for every scheme: up to '
        f"{_e(config['epochs'])} epochs, batch {_e(config['batch_size'])}, AdamW one-cycle lr "
        f"{_e(config['lr'])}; the selected epoch is the one with the best validation accuracy. "
        f"{_stem_note(utility)} Scores on the held-out test split. Most of a gap "
        "between plaintext and <code>svd</code> is the factor's design, not the stem: "
        "<code>Z = U<sub>k</sub>S<sub>k</sub></code> keeps each image's row Gram matrix but "
        "discards its right singular vectors, and with them whatever a rotation of the image's "
        "columns changes (docs/RESULTS.md, \"Where the gap comes from\").</p>",
        _table(header, summary_rows, table_id="utility-table"),
        "<h3>Details</h3>",
        _table(("scheme", "model", "stem", "input", "epochs", "test images", "accuracy",
                "macro-F1", "macro ROC-AUC", "train s"), detail, left=3,
               table_id="utility-detail"),
    ]
    sweep = metrics["sweep"]
    if sweep:
        sweep_cfg = metrics["config"]["sweep"]
        parts += [
            "<h3>Accuracy against the rank k (multistage preset)</h3>",
            f'<p class="note">{_e(sweep_cfg["model"])}, {_e(sweep_cfg["epochs"])} epochs per k; '
            "the key's other stages are kept and it is recalibrated per k.</p>",
            '<div class="grid"><div>',
            _image(run_dir / "sweep" / "accuracy_vs_rank.png", "accuracy against k"),
            "</div><div>",
            _table(("k", "test accuracy", "macro-F1", "epochs"),
                   [(_e(r["rank"]), _num(r["test_accuracy"]), _num(r["test_macro_f1"]),
                     _e(r["epochs_run"])) for r in sweep], table_id="sweep-table"),
            "</div></div>",
        ]
    parts.append("</section>")
    return "".join(parts)


def _attack_legend(rows: Sequence[dict[str, Any]]) -> str:
    """The registry's label and summary of each attack in ``rows``, in table order."""
    present = {r["attack"] for r in rows}
    items = [
        f"<li><code>{_e(spec.name)}</code> ({_e(spec.label)}; "
        f"{_e(', '.join(sorted(spec.threats)))}): {_e(spec.summary)}</li>"
        for spec in attack_specs()
        if spec.name in present
    ]
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _privacy_section(run_dir: Path, metrics: dict[str, Any]) -> str:
    cfg = metrics["config"]["privacy"]
    parts = [
        '<section id="privacy"><h2>Privacy: what an attacker gets back</h2>',
        f'<p class="note">{_e(cfg["victims"])} victim images, {_e(cfg["public"])} public images '
        f"and up to {_e(max(cfg['pairs']) if cfg['pairs'] else 0)} known pairs, all disjoint. "
        "A1: the attacker has public images of the modality; A2: also known (original, "
        "obfuscated) pairs; A3: also the key. SSIM (11x11 Gaussian, sigma 1.5) and PSNR on "
        "[0, 1] images; PSNR unclipped keeps the reconstruction's out-of-range values. "
        "Re-identification: top-1/top-5 accuracy of matching each obfuscated victim to its "
        "original among all candidates (chance in brackets). The <code>mean_image</code> row is "
        "the yardstick, not an attack: an attack recovers something of the victim only where "
        "it scores above that row.</p>",
        _attack_legend(metrics["privacy"]),
    ]
    for preset in metrics["presets"]:
        summary = PrivacySummary.from_records(r for r in metrics["privacy"] if r["preset"] == preset)
        parts += [f"<h3>{_e(preset)} preset</h3>", summary.to_html(table_id=f"privacy-{preset}")]
    parts += [
        "<h3>Example reconstructions</h3>",
        '<p class="note">The first victims: original, what the attacker holds, then each '
        "attack's reconstruction (rows named attack and threat model).</p>",
        '<div class="grid">',
        *(
            f"<div><b>{_e(preset)}</b>"
            + _image(run_dir / "privacy" / preset / "examples.png",
                     f"example reconstructions, {preset}")
            + "</div>"
            for preset in metrics["presets"]
        ),
        "</div></section>",
    ]
    return "".join(parts)


def _tradeoff_section(metrics: dict[str, Any]) -> str:
    plain, points = tradeoff_points(metrics)
    rows = [
        [_e(p.preset), _num(p.accuracy), _num(p.reid_top1), _num(p.lookalike_above_yardstick)]
        for p in points
    ]
    data = base64.b64encode(tradeoff_figure(plain, points)).decode("ascii")
    return (
        '<section id="tradeoff"><h2>Trade-off: accuracy against what leaks</h2>'
        f'<p class="note">Each preset as one point: test accuracy (mean over the models; '
        f"plaintext {_num(plain)}) against keyless re-identification top-1 and keyless "
        "look-alike SSIM above the mean-image yardstick (A1). Dotted lines: the "
        "<code>private</code> targets (re-identification at most 1%, look-alikes at or below the "
        "yardstick). The frontier over stage settings is <code>benchmarks/frontier.py</code> "
        "(docs/RESULTS.md).</p>"
        + _table(["preset", "accuracy", "re-identification top-1",
                  "look-alike SSIM above yardstick"], rows, table_id="tradeoff")
        + f'<img class="fig" alt="accuracy against privacy" src="data:image/png;base64,{data}">'
        "</section>"
    )


def _efficiency_section(metrics: dict[str, Any]) -> str:
    timings = metrics["efficiency"]
    order = ("truncation", "quantization", "noise", "projection", "total")
    stages = sorted({r["stage"] for r in timings}, key=lambda s: order.index(s) if s in order else 9)
    presets = list(dict.fromkeys(r["preset"] for r in timings))
    by = {(r["preset"], r["stage"]): r for r in timings}
    rows = [
        [_e(stage)] + [_num(by[(p, stage)]["ms_per_image"]) if (p, stage) in by else "—"
                       for p in presets]
        for stage in stages
    ]
    device = timings[0]["device"] if timings else ""
    images = timings[0]["images"] if timings else 0
    throughput = [
        (_e(p), _e(sum(v["images"].values())), _num(v["seconds"], 1),
         _num(v["images_per_second"], 0), _e(v["skipped"]))
        for p, v in metrics["obfuscation"].items()
    ]
    steps = [(_e(s["step"]), _num(s["seconds"], 1)) for s in metrics["steps"]]
    total = sum(s["seconds"] for s in metrics["steps"])
    return (
        '<section id="efficiency"><h2>Efficiency</h2>'
        f'<p class="note">Milliseconds per image of each stage, batched on {_e(device)}, '
        f"{_e(images)} images, best of {_e(metrics['config']['efficiency']['repeats'])} passes "
        "(truncation includes the input checks).</p>"
        # One column per preset: the table grows with the study's presets, so it gets the
        # section's whole width rather than half of it.
        + '<div class="scroll">'
        + _table(["stage"] + [f"{p} ms/image" for p in presets], rows, table_id="stage-table")
        + "</div><h3>End to end</h3>"
        + _table(("preset", "images", "s", "images/s", "skipped"), throughput,
                 table_id="throughput-table")
        + '<p class="note">Through <code>obfuscate_dataset</code>: decoding, transform and '
        "writing the store.</p>"
        + "<h3>Wall time of each step</h3>"
        + _table(("step", "seconds"), steps + [("<b>total</b>", f"<b>{total:.1f}</b>")],
                 table_id="steps-table")
        + "</section>"
    )


def _parameters_section(metrics: dict[str, Any]) -> str:
    study = metrics["study"]
    dataset = study.get("dataset", {})
    rows = [
        ("run id", study.get("run_id", "")),
        ("started / finished", f"{study.get('started', '')} / {study.get('finished', '')}"),
        ("dataset", f"{dataset.get('name', '')}, {dataset.get('source', '')}"),
        ("classes", ", ".join(dataset.get("classes", []))),
        ("images", ", ".join(f"{k}: {v}" for k, v in dataset.get("images", {}).items())),
        ("medveil / torch / Python",
         f"{study.get('medveil')} / {study.get('torch')} / {study.get('python')}"),
        ("machine", study.get("machine", "")),
    ] + [(f"{p} key fingerprint", fp) for p, fp in study.get("keys", {}).items()]
    return (
        '<section id="parameters"><h2>Run parameters</h2>'
        + _table(("", "value"), [(_e(a), _e(b)) for a, b in rows], left=2, table_id="run-table")
        + '<p class="note">The keys are not in the run folder; only their fingerprints are.</p>'
        + "<h3>Resolved configuration (config.yaml)</h3>"
        + f"<pre>{_e(yaml.safe_dump(metrics['config'], sort_keys=False, default_flow_style=None))}</pre></section>"
    )


def render_report(run_dir: Path, metrics: dict[str, Any]) -> str:
    """The report's HTML text for a run folder and its gathered metrics."""
    study = metrics["study"]
    dataset = study.get("dataset", {})
    synthetic = dataset.get("source", "").startswith("embedded")
    images = sum(dataset.get("images", {}).values())
    caveat = (
        '<div class="callout"><b>Synthetic data.</b> This run used medveil\'s embedded '
        f"synthetic set ({images} images): it shows that the pipeline works end to end, not how "
        "the scheme fares on real scans. Classifiers on obfuscated arrays need far more "
        "training images than on plaintext, so at this size their accuracy says little. Run "
        "the study on a real dataset (see the README), and see <code>docs/RESULTS.md</code> "
        "for the measured numbers on the Kaggle sets.</div>"
        if synthetic else ""
    )
    total = sum(s["seconds"] for s in metrics["steps"])
    title = f"medveil study: {dataset.get('name', run_dir.name)}"
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}'
        f"</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1>"
        f"<p>{_e(dataset.get('source', ''))} data, classes {_e(', '.join(dataset.get('classes', [])))}"
        f" · keys {_e(', '.join(f'{p} {fp}' for p, fp in study.get('keys', {}).items()))}</p>"
        f"<p>{_e(study.get('machine', ''))} · {total:.0f} s in all · finished "
        f"{_e(study.get('finished', ''))}</p></header>"
        '<nav><a href="#claims">Claims</a><a href="#pipeline">Pipeline</a>'
        '<a href="#utility">Utility</a><a href="#privacy">Privacy</a>'
        '<a href="#tradeoff">Trade-off</a><a href="#efficiency">Efficiency</a><a href="#parameters">Parameters</a></nav>'
        f"<main>{caveat}"
        + _claims_section(metrics)
        + _pipeline_section(run_dir, metrics)
        + _utility_section(run_dir, metrics)
        + _privacy_section(run_dir, metrics)
        + _tradeoff_section(metrics)
        + _efficiency_section(metrics)
        + _parameters_section(metrics)
        + "</main><footer>Written by medveil "
        f"{_e(study.get('medveil', ''))}; every number comes from this run's "
        "<code>metrics.json</code>.</footer></body></html>\n"
    )


def write_report(run_dir: str | Path) -> Path:
    """Gather the run's metrics and write ``report.html`` atomically; returns its path."""
    run_dir = Path(run_dir).expanduser()
    metrics = collect_metrics(run_dir)
    path = run_dir / "report.html"
    atomic_write_bytes(path, render_report(run_dir, metrics).encode("utf-8"))
    return path
