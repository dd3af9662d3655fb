"""`facestyle models list|path|import|verify`: the weights registry from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from facestyle.cli._common import JsonOpt, out, print_json, user_errors

models_app = typer.Typer(
    help="Pretrained models: list, locate, import (offline) and verify.", no_args_is_help=True
)


@models_app.command("list")
def list_cmd(json: bool = JsonOpt) -> None:
    """Every registered model with its source, licence, sizes and whether its weights are present."""
    with user_errors():
        from facestyle.models.registry import list_models, model_summary

        rows = [model_summary(spec) for spec in list_models()]
        if json:
            print_json(rows)
            return
        from rich.table import Table

        table = Table("name", "kind", "weights", "input", "dim", "description")
        for r in rows:
            table.add_row(
                r["name"],
                "+".join(r["roles"]),
                r["status"],
                str(r["input_size"] or "-"),
                str(r["embedding_size"] or "-"),
                r["description"],
            )
        out.print(table)


@models_app.command("path")
def path_cmd(name: str = typer.Argument(..., help="Model name."), json: bool = JsonOpt) -> None:
    """Where a model's (verified) weight files are; exits 4 if missing."""
    with user_errors():
        from facestyle.errors import UsageError
        from facestyle.models.registry import get_model
        from facestyle.models.weights import weight_path

        spec = get_model(name)
        if not spec.files:
            raise UsageError(f"model {name!r} has no registered files ({spec.user_weights or spec.licence})")
        paths = [str(weight_path(spec, wf.filename)) for wf in spec.files]
        if json:
            print_json({"name": name, "paths": paths})
        else:
            for p in paths:
                out.print(p)


@models_app.command("import")
def import_cmd(
    name: str = typer.Argument(..., help="Model name, e.g. vgg19-imagenet or facenet-vggface2."),
    file: Path = typer.Argument(..., help="The downloaded weight file.", readable=False),
    json: bool = JsonOpt,
) -> None:
    """Check a downloaded weight file's sha256 and copy it into the cache (no network needed)."""
    with user_errors():
        from facestyle.models.registry import get_model
        from facestyle.models.weights import import_weights

        target = import_weights(get_model(name), file)
        if json:
            print_json({"name": name, "path": str(target)})
        else:
            out.print(f"imported {name}: {target}")


@models_app.command("verify")
def verify_cmd(
    name: str | None = typer.Argument(None, help="Model name (default: all)."), json: bool = JsonOpt
) -> None:
    """Re-hash weight files; exits 4 if any requested model is missing or corrupt."""
    with user_errors():
        from facestyle.errors import EXIT_WEIGHTS_MISSING
        from facestyle.models.registry import get_model, list_models
        from facestyle.models.weights import status

        specs = [get_model(name)] if name else list_models()
        rows = [
            {"name": s.name, "file": wf.filename, "status": st, "path": str(p) if p else None}
            for s in specs
            for wf, p, st in status(s)
        ]
        if json:
            print_json(rows)
        else:
            for r in rows:
                out.print(f"{r['name']:24} {r['file']:44} {r['status']}")
        bad = [r for r in rows if r["status"] != "ok"]
        # Without a name, a missing optional download is information, not failure; corruption always is.
        failing = bad if name else [r for r in bad if r["status"] != "missing"]
        raise typer.Exit(EXIT_WEIGHTS_MISSING if failing else 0)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
