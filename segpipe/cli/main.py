"""The ``segpipe`` command: builds the Typer app from ``segpipe.cli.commands`` and maps errors.

Exit codes: 0 ok, 1 problems found / partial failure, 2 cannot run. A :class:`SegpipeError` becomes one
line on stderr; any other exception too, unless ``--verbose`` asks for the traceback.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import warnings
from typing import Any

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.exceptions import TyperException
from typer.main import get_command

import segpipe.cli.commands as commands
from segpipe import __version__
from segpipe.cli import state
from segpipe.errors import SegpipeError, describe_failure
from segpipe.execution import cluster
from segpipe.storage.limits import check_limits

app = typer.Typer(
    name="segpipe",
    help="Batch annotation and dataset processing for image segmentation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segpipe {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Batch annotation and dataset processing for image segmentation."""
    state.VERBOSE = verbose
    state.QUIET = quiet
    check_limits()  # a malformed SEGPIPE_MAX_PIXELS is one line here, not a failure per image or worker
    if verbose:
        cluster.WORKER_LOG_LEVEL = logging.ERROR  # the workers' own error logs, tracebacks included
    if not verbose:
        warnings.showwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    """Prints a warning as ``warning: <message>`` on stderr (Python's format adds the source line)."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=sys.stderr if file is None else file)


def _load_commands() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        mod.register(app)


_load_commands()


def run() -> None:
    """Entry point: runs the app and maps every error to one line and an exit code."""
    verbose = any(a in ("--verbose", "-v") for a in sys.argv[1:])
    if not verbose:
        # zarr reads chunks on its own asyncio loop: after a damaged chunk has been reported in one line,
        # the sibling reads it gathered are destroyed pending at exit, and asyncio would log each one.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        # With standalone_mode=False click *returns* the code of typer.Exit instead of exiting.
        # prog_name: messages say `segpipe ...` under `python -m segpipe` too.
        rc = app(standalone_mode=False, prog_name="segpipe")
        sys.exit(rc if isinstance(rc, int) else 0)
    except SegpipeError as e:
        if verbose:
            raise
        state.err(str(e))
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        state.err("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        state.err("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except TyperException as e:  # typer's own click: unknown commands and options, bad option values
        if isinstance(e, NoArgsIsHelpError):  # `segpipe` alone: the help, as click shows it
            e.show()
            sys.exit(2)
        state.err(_usage_line(e))
        sys.exit(2)
    except Exception as e:  # failures no boundary mapped: one line, never a traceback
        if verbose:
            raise
        mapped = describe_failure(e, output=state.OUTPUT, kept=_KEPT.get(_command()))
        if mapped is not None:
            state.err(str(mapped))
            sys.exit(mapped.exit_code)
        state.err(f"internal error: {type(e).__name__}: {e} (run with --verbose for the traceback)")
        sys.exit(2)


def _command() -> str:
    """The subcommand named on the command line (the first argument that is no global option), or ``""``."""
    for a in sys.argv[1:]:
        if not a.startswith("-"):
            return a
    return ""


def _usage_line(e: TyperException) -> str:
    """One line for a click usage error (see :mod:`segpipe.cli.usage`); any other click error as its message."""
    from segpipe.cli.usage import usage_line  # lazy: only a usage error needs it (it loads pydantic)

    if isinstance(e, UsageError):
        return usage_line(e, get_command(app), sys.argv[1:])
    return " ".join(e.format_message().split()) if hasattr(e, "format_message") else str(e)


#: What a command leaves behind when writing fails (disk full, read-only): said in the error line.
_KEPT = {
    "prelabel": "images finished before it are kept in the store with their receipts (rerun with --resume)",
    "convert": "nothing earlier in the destination was replaced",
    "export": "nothing earlier in the destination was replaced",
    "evaluate": "earlier report files are kept as they were",
    "evaluate-checkpoints": "finished checkpoints' stores and reports are kept",
    "validate": "an earlier --json file is kept as it was",
    "train": "checkpoints of finished epochs are kept (rerun with --resume)",
    "synth": "nothing earlier in the output folder was replaced",
    "run": "finished stages' outputs are kept",
    "demo": "finished steps' outputs are kept",
    "view": "nothing earlier in --out was replaced",
    "push": "batches the server accepted are recorded in the store (a rerun sends only the rest)",
    "pull": "nothing earlier in OUT was replaced",
}
