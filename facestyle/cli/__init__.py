"""The ``facestyle`` command line: one thin typer app over the public API.

Each concern registers its commands from its own module (``face``, ``models``, ``gallery``, ...), so
this file only assembles them. Heavy imports (torch, faiss) happen inside commands: ``--help`` is fast.
"""

from __future__ import annotations

import importlib

import typer

from facestyle.cli._common import STATE

app = typer.Typer(
    name="facestyle",
    help="Offline face recognition and neural style transfer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors."),
) -> None:
    if debug:
        STATE["debug"] = True


#: Command modules, each exposing ``register(app)``; listed in the order ``--help`` shows them.
COMMAND_MODULES = ("face", "models", "gallery", "bulk", "train", "style", "heads")

for _name in COMMAND_MODULES:
    importlib.import_module(f"facestyle.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()
