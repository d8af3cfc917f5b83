"""Command-line options declared once, on the job's config dataclass (as LLaVA's `HfArgumentParser` and
prismatic's draccus configs do): each field is one option, its name the field's (`grad_accum` ->
`--grad-accum`), its default the field's, its help and any other CLI detail in the field's metadata.
`config_command` turns a function that takes the config into the typer command that builds it.

    @dataclass(frozen=True, kw_only=True)
    class TrainConfig:
        stage: int = option(help="1 or 2")             # required: no default
        epochs: float = 1.0                             # a plain field is an option too, without help
        lr: float | None = option(None, help="learning rate")

    @app.command()
    @config_command(TrainConfig)
    def train(config: TrainConfig):
        run_train(config)

This module imports nothing heavy, not even typer at import time: the job modules declare their fields with
`option()` and must stay importable by `sgeo --help` in milliseconds.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from .model.presets import PRESETS

MODEL_HELP = f"a preset ({', '.join(PRESETS)}) or a model directory"  # every --model option's help

_CLI = "sgeo.cli"  # the metadata key of a field's CLI details (a `_Cli`)


@dataclasses.dataclass(frozen=True)
class _Cli:
    help: str | None = None
    flags: tuple[str, ...] = ()  # the option's names, where not the field's (`--json`, `--load-4bit`)
    argument: bool = False  # positional (`sgeo ask IMAGE QUESTION`)
    type: Any = None  # the type the CLI parses, where the field's is wider than typer reads (str | list[str])
    typer: dict = dataclasses.field(default_factory=dict)  # anything else typer.Option takes (envvar, ...)


def option(
    default: Any = dataclasses.MISSING,
    help: str | None = None,
    *,
    flags: tuple[str, ...] = (),
    argument: bool = False,
    type: Any = None,
    **typer_kwargs: Any,
) -> Any:
    """A config field that is also a command-line option: `default` (none: the option is required), its `help`,
    and where needed its `flags` (names; a bool given one name has no `--no-` form), `argument=True` for a
    positional one, the `type` the CLI parses, and other typer.Option keywords (`envvar=`, `show_default=`)."""
    cli = _Cli(help=help, flags=tuple(flags), argument=argument, type=type, typer=typer_kwargs)
    return dataclasses.field(default=default, metadata={_CLI: cli})


def config_command(config_class: type) -> Callable[[Callable], Callable]:
    """Decorate `def command(config)`: the result is a typer command whose parameters are `config_class`'s
    fields (in their order), and which calls `command(config_class(**options))`."""

    def decorate(command: Callable) -> Callable:
        parameters, annotations = _parameters(config_class)

        @functools.wraps(command)  # the command's name and docstring (typer's help) stay the command's
        def build_and_run(**options):
            return command(config_class(**options))

        # typer reads a command's options from its signature (`inspect.signature`, which takes `__signature__`)
        # and its type hints (`typing.get_type_hints`, which reads `__annotations__`): give it the fields'
        del build_and_run.__wrapped__  # else inspect.signature would follow it back to `command(config)`
        build_and_run.__signature__ = inspect.Signature(parameters)
        build_and_run.__annotations__ = annotations
        return build_and_run

    return decorate


def _parameters(config_class: type) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """The typer parameters of `config_class`'s fields, and their types."""
    import typer  # here, not at import: the job modules import `option` from this module

    hints = typing.get_type_hints(config_class)  # the fields' types, resolved from their strings
    parameters, annotations = [], {}
    for field in dataclasses.fields(config_class):
        if not field.init:
            continue
        cli = field.metadata.get(_CLI, _Cli())
        given = dict(cli.typer, help=cli.help)
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default, given["default_factory"] = ..., field.default_factory
        else:
            default = ...  # typer's "required"
        if cli.argument:
            info = typer.Argument(default, **given)
        else:
            info = typer.Option(default, *cli.flags, **given)
        annotations[field.name] = cli.type or hints[field.name]
        parameters.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotations[field.name]
            )
        )
    return parameters, annotations
