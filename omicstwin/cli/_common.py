"""What every command shares: one-line errors, warnings as lines, logging, the --debug option.

Every :class:`~omicstwin.errors.OmicstwinError` is printed as one line on stderr with exit code 2;
an unexpected exception as one line with exit code 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any

import typer

from omicstwin._optional import EXTRA_OF, install_hint
from omicstwin.errors import OmicstwinError

EXIT_INPUT_ERROR = 2
EXIT_UNEXPECTED = 1

DebugOption = Annotated[
    bool, typer.Option("--debug", help="Show full tracebacks and debug logging.")
]


def _configure_logging(debug: bool) -> None:
    logger = logging.getLogger("omicstwin")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def _run(debug: bool, work: Callable[[], Any]) -> Any:
    """Run a command body: warnings as 'warning:' lines, errors as one 'error:' line."""
    _configure_logging(debug)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            result = work()
        except OmicstwinError as exc:
            if debug:
                raise
            _echo_warnings(caught)
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_INPUT_ERROR) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except ModuleNotFoundError as exc:
            if debug or (exc.name or "").split(".")[0] not in EXTRA_OF:
                raise
            _echo_warnings(caught)
            typer.echo(
                f"error: this command needs {exc.name}, which is not installed; fix: "
                f"{install_hint(exc.name)}",
                err=True,
            )
            raise typer.Exit(EXIT_INPUT_ERROR) from None
        except Exception as exc:
            if debug:
                raise
            typer.echo(
                f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the "
                "traceback, and please report it)",
                err=True,
            )
            raise typer.Exit(EXIT_UNEXPECTED) from None
    _echo_warnings(caught)
    return result


def _echo_warnings(caught: list[warnings.WarningMessage]) -> None:
    from omicstwin.errors import OmicstwinWarning

    for item in caught:
        if issubclass(item.category, OmicstwinWarning):
            typer.echo(f"warning: {item.message}", err=True)
