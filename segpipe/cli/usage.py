"""Click usage errors as one line: what is wrong, the option or command it concerns, where to look.

Click prints a usage error as a usage block, a hint and ``Error: <Message>.``; segpipe's promise is
one ``error:`` line on stderr and exit 2 (cannot run), like every other error. The line reads::

    error: no such option: --nope; did you mean --n? (see `segpipe synth --help`)
    error: invalid value for --task: 'bogus' is not one of semantic, instance, panoptic, landmarks (see ...)
    error: missing argument OUT (see `segpipe synth --help`)
    error: no such option: -q (global options go before the command: `segpipe -q synth ...`)

A "did you mean" is added wherever click or difflib offers one (options and commands).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import get_close_matches
from typing import Any

from typer._click.exceptions import (
    BadOptionUsage,
    BadParameter,
    MissingParameter,
    NoSuchOption,
    UsageError,
)

from segpipe.pipeline.requests import short_reason

#: Options of the ``segpipe`` group itself, which click takes only before the command's name.
GLOBAL_OPTIONS = frozenset({"-q", "--quiet", "-v", "--verbose", "--version"})

_NO_SUCH_COMMAND = re.compile(r"No such command '(?P<name>.*?)'\.?(?: Did you mean (?P<matches>.+)\?)?$")
_EXTRA_ARGS = re.compile(r"Got unexpected extra argument(?:s|\(s\))? \((?P<args>.*)\)$")
_NOT_ONE_OF = re.compile(r"(?P<value>.+?) is not one of (?P<choices>.+)$")
_REQUIRES = re.compile(r"Option '(?P<opt>[^']+)' requires (?P<what>an argument|\d+ arguments)\.?$")


def usage_line(e: UsageError, root: Any, argv: Sequence[str]) -> str:
    """The one line (without ``error:``) for a click usage error.

    Args:
        e: The error click raised while parsing.
        root: The ``segpipe`` click group, to name the command when click did not attach a context
            (an option missing its value is raised without one).
        argv: The command line after ``segpipe``.

    Returns:
        ``"<what is wrong> (<where to look>)"``.
    """
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else command_path(root, argv)
    hint = f"see `{path} --help`"
    if isinstance(e, NoSuchOption):
        what = f"no such option: {e.option_name}"
        if e.option_name in GLOBAL_OPTIONS and path != "segpipe":
            return f"{what} (global options go before the command: `segpipe {e.option_name} {path[8:]} ...`)"
        if e.possibilities:
            what += f"; did you mean {' or '.join(sorted(e.possibilities))}?"
    elif isinstance(e, MissingParameter):
        what = f"missing {_param_kind(e)} {_param_name(e)}"
    elif isinstance(e, BadParameter):
        what = f"invalid value for {_param_name(e)}: {_reason(e)}"
    elif isinstance(e, BadOptionUsage) and (m := _REQUIRES.match(e.message)):
        what = f"option {m['opt']} needs a value" if m["what"] == "an argument" else \
            f"option {m['opt']} needs {m['what'].replace('arguments', 'values')}"
    else:
        what = _generic(e, root, path)
    return f"{what} ({hint})"


def command_path(root: Any, argv: Sequence[str]) -> str:
    """``segpipe`` followed by the (sub)command names at the start of ``argv``, e.g. ``segpipe push labelstudio``."""
    path, cmd = ["segpipe"], root
    for token in argv:
        if token.startswith("-"):
            continue  # the group's own options are flags: no value follows them
        sub = getattr(cmd, "commands", {}).get(token)
        if sub is None:
            break
        path.append(token)
        cmd = sub
    return " ".join(path)


def _param_name(e: BadParameter) -> str:
    """The option as typed in ``--help`` (its long name), or an argument's name in capitals."""
    param = e.param
    if param is None:
        hint = e.param_hint
        return hint if isinstance(hint, str) else " / ".join(hint or ("value",))
    if getattr(param, "param_type_name", "") == "argument":  # as --help shows it: its metavar (DST) or name
        return str(param.metavar or param.name or "argument").upper()
    opts = [o for o in param.opts if o.startswith("--")] or list(param.opts)
    return opts[0] if opts else str(param.name)


def _param_kind(e: MissingParameter) -> str:
    kind = e.param_type or (getattr(e.param, "param_type_name", None) if e.param is not None else None)
    return str(kind or "parameter")


def _reason(e: BadParameter) -> str:
    """Why the value was refused, from pydantic's error when the value's type was wrong."""
    cause = e.__cause__
    errors = getattr(cause, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
        except (IndexError, TypeError):  # pragma: no cover - pydantic always has one
            first = None
        if first is not None:
            text = short_reason(first)
            if text:
                return text
    message = _sentence(str(e.message).removeprefix("Value error, "))
    if m := _NOT_ONE_OF.match(message):  # a choice: the names as --help shows them, unquoted
        choices = ", ".join(c.strip().strip("'") for c in m["choices"].split(","))
        return f"{m['value']} is not one of {choices}"
    return message


def _sentence(message: str) -> str:
    """One line, no final full stop, a lower-case start unless the first word is an acronym (CUDA)."""
    message = " ".join(message.split()).rstrip(".")
    if len(message) > 1 and message[1].islower():
        return message[0].lower() + message[1:]
    return message


def _generic(e: UsageError, root: Any, path: str) -> str:
    """Missing command, unknown command (with its "did you mean"), extra arguments, anything else."""
    message = " ".join(e.format_message().split())
    if m := _NO_SUCH_COMMAND.match(message):
        name, matches = m["name"], m["matches"]
        if matches is None:  # click's suggestion is off: offer difflib's over the group's commands
            group = root
            for part in path.split()[1:]:
                group = getattr(group, "commands", {}).get(part, group)
            close = get_close_matches(name, list(getattr(group, "commands", {})))
            matches = ", ".join(repr(c) for c in close) if close else None
        what = f"no such command: {name}"
        if matches:
            what += f"; did you mean {' or '.join(n.strip().strip(chr(39)) for n in matches.split(','))}?"
        return what
    if m := _EXTRA_ARGS.match(message):
        args = m["args"]
        return f"unexpected extra argument{'s' if ' ' in args else ''}: {args}"
    return _sentence(message)
