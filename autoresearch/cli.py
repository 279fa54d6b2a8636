"""The `autoresearch` command line: a thin typer layer over the harness modules.

Each command parses options and calls one function that knows nothing about the terminal.
A `UserError` from anywhere below becomes one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from autoresearch import __version__
from autoresearch.errors import UserError

app = typer.Typer(
    name="autoresearch",
    help="Turn one GPU and a night of sleep into a night of research.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"autoresearch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Turn one GPU and a night of sleep into a night of research."""


# --- prepare ------------------------------------------------------------------------------------
# (command added by the data pipeline)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning UserError into one line and an exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except typer.TyperException as error:  # usage errors: unknown option, bad value, ...
        show = getattr(error, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(error, "exit_code", 2))
