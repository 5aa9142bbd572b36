"""``medveil attack``: the reconstruction and re-identification attacks against a key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperOption

from medveil.cli.app import (
    AllowOpenKeyOption,
    _text,
    app,
    console,
)

__all__ = ["attack_command"]


class _AttackCommand(TyperCommand):
    """The ``attack`` command, whose help lists the attack registry as it stands.

    The list is read when help is shown, not when this module is imported: importing the
    attacks (torch) for every command would slow them all, and an attack registered later
    (a plug-in, a test) appears too.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from medveil.attacks import ThreatModel, attack_specs
        from medveil.attacks.registry import needs_text

        specs = attack_specs()
        for param in self.params:
            if param.name == "attacks" and isinstance(param, TyperOption):
                param.help = (
                    "Comma-separated attack names, or 'all': "
                    + ", ".join(spec.name for spec in specs)
                    + "."
                )
            elif param.name == "threat" and isinstance(param, TyperOption):
                param.help = "Comma-separated threat models among " + ",".join(ThreatModel) + "."
        listing = "\n".join(
            f"{spec.name}: {spec.label} ({', '.join(sorted(spec.threats))}; needs "
            f"{needs_text(spec)})"
            for spec in specs
        )
        summary = (self.help or "").split("\n\n")[0]  # the docstring's first paragraph
        self.help = (
            f"{summary}\n\nAttacks (threat models; what the attacker needs):\n\n"
            f"\b\n{escape(listing)}"
        )
        super().format_help(ctx, formatter)


@app.command("attack", cls=_AttackCommand)
def attack_command(
    dataset: Annotated[
        Path, typer.Argument(help="The custodian's dataset folder (victims, pairs).")
    ],
    key_file: Annotated[Path, typer.Option("--key", help="The key under evaluation.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for results and figure.")],
    public: Annotated[
        Optional[Path],
        typer.Option(help="Public dataset of the same modality (default: the rest of DATASET)."),
    ] = None,
    attacks: Annotated[str, typer.Option(help="Comma-separated attack names, or 'all'.")] = "all",
    threat: Annotated[
        str, typer.Option(help="Comma-separated threat models among A1,A2,A3.")
    ] = "A1,A2,A3",
    pairs: Annotated[
        str, typer.Option(help="Known-pair counts for A2, comma-separated.")
    ] = "100,1000",
    victims: Annotated[int, typer.Option(help="Victim images (not public, not pairs).")] = 200,
    public_images: Annotated[int, typer.Option(help="Public images.")] = 1000,
    decoder_steps: Annotated[int, typer.Option(help="Learned-decoder step budget.")] = 2000,
    decoder_seconds: Annotated[
        float, typer.Option(help="Learned-decoder time budget (s).")
    ] = 600.0,
    seed: Annotated[int, typer.Option(help="Seed of the image draw and the attacks.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    allow_open_key: AllowOpenKeyOption = False,
) -> None:
    """Run the reconstruction and re-identification attacks against a key on your data."""
    from medveil.keys import Key
    from medveil.privacy import PrivacyConfig, run_privacy

    config = PrivacyConfig(
        victims=victims,
        public=public_images,
        pairs=tuple(int(p) for p in pairs.split(",") if p.strip()),
        threats=tuple(t.strip() for t in threat.split(",") if t.strip()),
        attacks=tuple(a.strip() for a in attacks.split(",") if a.strip()),
        decoder_steps=decoder_steps,
        decoder_seconds=decoder_seconds,
        seed=seed,
        device=device,
    )
    key = Key.load(key_file, allow_open=allow_open_key)
    with console.status("attacking") as status:
        report = run_privacy(
            dataset,
            key=key,
            config=config,
            output=output,
            public_dataset=public,
            progress=lambda message: status.update(message),
        )
    title = f"attacks on key {key.fingerprint} ({key.params.preset})"
    Console().print(report.summary().to_rich(title=title))
    console.print(f"results (JSON, CSV, examples.png) in {_text(output)}")
