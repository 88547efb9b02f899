"""One request per command (issue 15): its CLI options, pipeline-file keys and fields agree, name and default.

Every command that does work has a request model in ``segpipe/pipeline/requests.py``. These tests read
the built command line (click's parameters), the request models, the ``Stage`` model of pipeline files
and the checked-in ``schemas/pipeline.schema.json``, and fail when one of them has an option, key or
field the others lack, or a different default, choice set or range, so an option added to one place
cannot be forgotten in another.
"""

from __future__ import annotations

import json
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import pytest
from pydantic import Field, SecretStr, TypeAdapter

from segpipe.cli import common
from segpipe.pipeline import requests
from segpipe.pipeline.requests import REQUESTS, STAGES, Request
from segpipe.pipeline.runspec import Stage
from tests.conftest import REPO

#: Commands that list what is registered and run nothing: no request.
LISTINGS = {"formats", "models", "schemas"}
#: Commands whose request lives with their workflow until it moves into requests.py.
PENDING: dict[str, str] = {}
#: Command-line options that are no field of any request: how to run or how to show, not what to do.
CLI_ONLY = {
    "workers": "where it runs: pipeline files set it once at the top, the Python API takes workers=",
    "scheduler": "where it runs: pipeline files set it once at the top, the Python API takes scheduler=",
    "jpg": "synth's shorthand for --format jpg",
    "json_lines": "how `segpipe run` prints its summaries",
    "serve": "`segpipe view --serve`: then serve the report (a server is no part of what the report is)",
    "port": "the port of `segpipe view --serve`",
}


def _commands() -> dict[str, Any]:
    """``{"convert": click command, "push labelstudio": ...}`` of the built CLI."""
    from typer.main import get_command

    from segpipe.cli.main import app

    out: dict[str, Any] = {}

    def walk(cmd: Any, path: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{path} {name}".strip())
            return
        out[path] = cmd

    walk(get_command(app), "")
    return out


COMMANDS = _commands()
BY_COMMAND = {m.COMMAND: m for m in REQUESTS if m.COMMAND}


def _key(param: Any) -> str:
    """The request key a click parameter stands for: an argument's name, an option's long flag."""
    if param.param_type_name == "argument":
        return str(param.name)
    flag = next(o for o in param.opts if o.startswith("--"))
    return flag[2:].replace("-", "_")


def _plain(value: Any) -> Any:
    """A default as comparable data: enum members as values, sequences as lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def _default(model: type[Request], name: str) -> Any:
    return _plain(model.model_fields[name].get_default(call_default_factory=True))


def _as_field(model: type[Request], name: str, value: Any) -> Any:
    """``value`` as the field ``name`` reads it (``--model-arg``'s ``[]`` of KEY=VALUE is the field's ``{}``)."""
    info = model.model_fields[name]
    adapter = TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)
    return _plain(adapter.validate_python(_plain(value)))


def _params(command: str) -> dict[str, Any]:
    return {_key(p): p for p in COMMANDS[command].params if p.name not in CLI_ONLY}


def _choices(annotation: Any) -> set[str] | None:
    """The values of a ``Literal`` (inside ``Annotated`` / ``| None``), or None."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _choices(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Literal:
        return {str(a) for a in typing.get_args(annotation)}
    for arg in typing.get_args(annotation):
        if (found := _choices(arg)) is not None:
            return found
    return None


def test_every_command_has_a_request_or_says_why_not() -> None:
    for command in COMMANDS:
        assert command in BY_COMMAND or command in LISTINGS or command in PENDING, \
            f"`segpipe {command}` has no request model in segpipe/pipeline/requests.py"
    for command in BY_COMMAND:
        assert command in COMMANDS, f"{BY_COMMAND[command].__name__} names `segpipe {command}`, which does not exist"


def disagreements(command: str, model: type[Request]) -> list[str]:
    """Where ``segpipe COMMAND``'s options and ``model``'s fields disagree: a name one lacks, or a default."""
    params, keys = _params(command), model.keys()
    found = [f"--{k} has no field" for k in sorted(set(params) - set(keys))]
    found += [f"field {k} has no option" for k in sorted(set(keys) - set(params))]
    for key in sorted(set(params) & set(keys)):
        param, name = params[key], keys[key]
        info = model.model_fields[name]
        if param.required != info.is_required():
            found.append(f"{key}: required {param.required} on the command line, {info.is_required()} in the request")
        elif not param.required and _as_field(model, name, param.default) != _default(model, name):
            found.append(f"{key}: default {param.default!r} on the command line, "
                         f"{info.get_default(call_default_factory=True)!r} in the request")
        if param.name != name:  # build_request takes them by parameter name
            found.append(f"{key}: parameter {param.name!r} must be named {name!r}")
    return found


@pytest.mark.parametrize("command", sorted(BY_COMMAND), ids=str)
def test_options_and_fields_agree(command: str) -> None:
    """Each option is a field and each field an option, under one name, with one default."""
    assert disagreements(command, BY_COMMAND[command]) == []


def test_the_check_finds_a_new_field_and_a_changed_default() -> None:
    """The check is not vacuous: a field no option has, and a default the command line does not share, are found."""

    class Drifted(requests.SynthRequest):
        n: int = 32
        colour: str = Field("red", description="a field added to the request only")

    assert disagreements("synth", Drifted) == ["field colour has no option", "n: default 16 on the command line, "
                                               "32 in the request"]


@pytest.mark.parametrize("command", sorted(BY_COMMAND), ids=str)
def test_positional_arguments_are_the_request_arguments(command: str) -> None:
    model = BY_COMMAND[command]
    arguments = [p.name for p in COMMANDS[command].params if p.param_type_name == "argument"]
    assert tuple(arguments) == model.ARGUMENTS


@pytest.mark.parametrize("command", sorted(BY_COMMAND), ids=str)
def test_choices_and_ranges_agree(command: str) -> None:
    """A closed set lists the same values; a range checked while parsing has the same bounds."""
    model = BY_COMMAND[command]
    keys = model.keys()
    for key, param in _params(command).items():
        info = model.model_fields[keys[key]]
        annotation = param.type_descriptor.annotation
        enum = next((a for a in (annotation, *typing.get_args(annotation))
                     if isinstance(a, type) and issubclass(a, Enum)), None)
        if enum is not None:
            choices = {e.value for e in enum}
            assert _choices(info.annotation) == choices, (command, key)
        bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in info.metadata
                  if isinstance(m, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt))}
        if param.min is not None:
            assert param.min == bounds.get("ge"), (command, key, param.min, bounds)
        if param.max is not None:
            assert param.max == bounds.get("le"), (command, key, param.max, bounds)


def test_every_request_field_has_a_documented_description() -> None:
    for model in REQUESTS:
        assert model.__doc__ and model.COMMAND is not None
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description (it is the schema's help)"


def test_pipeline_stages_are_the_requests() -> None:
    """A stage key holds exactly its command's request: the keys and defaults of the file are the fields'."""
    stages = {info.alias or name: info.annotation for name, info in Stage.model_fields.items()}
    assert set(stages) == set(STAGES)
    for key, model in STAGES.items():
        assert stages[key] == model | None, key


def test_the_schema_file_has_the_command_line_defaults() -> None:
    """``schemas/pipeline.schema.json`` (what editors check files against) agrees with each command's options."""
    schema = json.loads((REPO / "schemas" / "pipeline.schema.json").read_text())
    for key, model in STAGES.items():
        props = schema["$defs"][model.__name__]["properties"]
        assert sorted(props) == sorted(model.keys()), key
        if model.COMMAND not in COMMANDS:  # a stage without a command (ingest)
            continue
        for k, param in _params(model.COMMAND).items():
            if not param.required:
                name = model.keys()[k]
                written = _as_field(model, name, props[k]["default"]) if "default" in props[k] else None
                assert written == _as_field(model, name, param.default), (key, k)


def test_cli_seed_limit_is_the_requests() -> None:
    assert common.MAX_SEED == requests.MAX_SEED


def test_yaml_keys_and_cli_options_name_the_same_field(tmp_path: Path) -> None:
    """The same value through a pipeline file and through the API gives the same request."""
    from segpipe.pipeline.runspec import PipelineSpec

    stage = {"src": "a.json", "out": "o", "to": "voc", "from": "coco", "images": "link", "layout": "flat"}
    spec = PipelineSpec.model_validate({"stages": [{"convert": stage}]})
    (_, from_file), = spec.steps()
    from_api = requests.ConvertRequest.build("a.json", "o", to="voc", from_="coco", images="link", layout="flat",
                                             overwrite=True)
    assert from_file == from_api  # the pipeline's overwrite: true reaches the stage that says nothing
