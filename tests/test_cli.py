"""The command line's wiring: options are declared once, as config fields (`sgeo.cli_options`); a field
declared on a config is an option of its command, with its help and default, and its value reaches the
config. The help lists what the registries hold, and imports nothing heavy."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from sgeo import cli
from sgeo.cli_options import config_command, option


@dataclass(frozen=True, kw_only=True)
class _Toy:
    """Every kind of declaration the configs use, on a config of its own."""

    image: Path = option(help="an image file", argument=True)
    stage: int = option(help="which stage")  # required
    rate: float | None = option(None, help="the rate (default: the stage's)")
    steps: int = 7  # a plain field: an option without help
    fast: bool = option(False, help="go fast")  # --fast/--no-fast
    as_json: bool = option(False, help="one JSON object", flags=("--json",))  # --json only
    store: list[str] | str | None = option(None, help="stores, repeated", type=list[str] | None)
    key: str | None = option(None, help="a secret", envvar="TOY_KEY", show_default=False)


def _toy_app(seen: list) -> typer.Typer:
    app = typer.Typer(add_completion=False, rich_markup_mode=None)

    @app.command()
    @config_command(_Toy)
    def toy(config: _Toy):
        """Do the toy thing."""
        seen.append(config)

    return app


def test_a_declared_field_is_an_option_with_its_help_and_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one option a line, unwrapped
    result = CliRunner().invoke(_toy_app([]), ["--help"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()

    def line(name):
        (found,) = [text for text in lines if name in text.split()]
        return found

    assert "Do the toy thing." in result.output  # the command's docstring is its help
    assert "an image file" in line("image")  # positional
    assert "which stage" in line("--stage") and "required" in line("--stage")
    assert "the rate (default: the stage's)" in line("--rate")
    assert "[default: 7]" in line("--steps")
    assert "go fast" in line("--fast") and "--no-fast" in line("--fast")
    assert "one JSON object" in line("--json") and "--no-json" not in result.output
    assert "stores, repeated" in line("--store")
    assert "a secret" in line("--key") and "TOY_KEY" in line("--key")


def test_the_options_given_reach_the_config_with_the_fields_types(monkeypatch):
    seen = []
    args = ["im.png", "--stage", "2", "--rate", "0.5", "--fast", "--json", "--store", "a", "--store", "b"]
    monkeypatch.setenv("TOY_KEY", "k1")
    result = CliRunner().invoke(_toy_app(seen), args)
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert config == _Toy(image=Path("im.png"), stage=2, rate=0.5, steps=7, fast=True, as_json=True,
                          store=["a", "b"], key="k1")  # fmt: skip
    assert isinstance(config.image, Path) and type(config.rate) is float and type(config.stage) is int

    seen.clear()  # nothing given: the fields' defaults
    monkeypatch.delenv("TOY_KEY")
    assert CliRunner().invoke(_toy_app(seen), ["im.png", "--stage", "1"]).exit_code == 0
    assert seen == [_Toy(image=Path("im.png"), stage=1)]


def test_a_missing_required_option_or_a_bad_value_is_typers_usage_error():
    for args, says in ((["im.png"], "--stage"), (["im.png", "--stage", "x"], "Invalid value for '--stage'")):
        result = CliRunner().invoke(_toy_app([]), args)
        assert result.exit_code == 2 and says in result.output


# command -> (its line with only the required options, its config class's module and name, the run_* called)
REQUIRED = {
    "train": (["train", "--stage", "1", "--data", "d.json", "--out", "o"], "sgeo.jobs.train", "run_train"),
    "ask": (["ask", "i.png"], "sgeo.jobs.ask", "run_ask"),
    "serve": (["serve"], "sgeo.jobs.serve", "run_serve"),
    "eval": (["eval", "--data", "b.json", "--out", "o"], "sgeo.jobs.eval", "run_eval"),
}
CONFIGS = {"train": cli.TrainConfig, "ask": cli.AskConfig, "serve": cli.ServeConfig, "eval": cli.EvalConfig}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_each_config_field_is_its_commands_option(command):
    """sgeo's own commands: the options are exactly the config's fields, each with the field's default."""
    click_command = typer.main.get_command(cli.app).commands[command]
    params = {param.name: param for param in click_command.params if param.name != "help"}
    fields = {field.name: field for field in dataclasses.fields(CONFIGS[command]) if field.init}
    assert list(params) == list(fields)  # in the fields' order, which is the help's
    for name, field in fields.items():
        if field.default is dataclasses.MISSING:
            assert params[name].required, name
        else:
            assert params[name].default == field.default, name
        if isinstance(params[name], click.Option) and name != "as_json":
            assert f"--{name.replace('_', '-')}" in params[name].opts, name


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_command_builds_the_config_defaults(command, monkeypatch):
    args, module, run_name = REQUIRED[command]
    seen = []
    monkeypatch.setattr(
        importlib.import_module(module), run_name, lambda config, *a, **k: seen.append(config)
    )
    with pytest.raises(SystemExit) as exit:  # typer's app exits 0 when the command returns
        cli.main(args)
    assert exit.value.code in (0, None)
    (config,) = seen
    required = {"train": dict(stage=1, data=Path("d.json"), out=Path("o")), "ask": dict(image=Path("i.png")),
                "serve": {}, "eval": dict(data=Path("b.json"), out=Path("o"))}[command]  # fmt: skip
    expected = CONFIGS[command](**required)
    assert config == expected
    for field in dataclasses.fields(expected):  # same types too (Path stays Path, 1.0 stays float)
        assert type(getattr(config, field.name)) is type(getattr(expected, field.name)), field.name


def test_every_train_option_reaches_the_resolved_recipe(tmp_path):
    """`TrainSettings` inherits TrainConfig's fields: an option not resolved to another value is saved as
    given (train_config.json, checkpoints), so a new option needs no second declaration to be recorded."""
    from sgeo.jobs.train.recipe import TrainConfig, TrainSettings, training_settings

    given = TrainConfig(stage=2, data=tmp_path / "d.json", out=tmp_path / "o", store="s", seed=7, epochs=2.5,
                        clip_drop=0.25, skip_invalid=True, lora_r=8, visual_branches="moge")  # fmt: skip
    settings = training_settings(given, world_size=1, device="cpu")
    redeclared = set(TrainSettings.__annotations__)  # the fields it declares itself: resolved values
    for field in dataclasses.fields(TrainConfig):
        if field.name not in redeclared:
            assert getattr(settings, field.name) == getattr(given, field.name), field.name
    assert (settings.data, settings.store, settings.lr, settings.lora.r) == (
        str(tmp_path / "d.json"),
        ["s"],
        2e-4,
        8,
    )


def test_help_names_come_from_the_registries():
    from sgeo.benchmarks import LOADERS
    from sgeo.model.presets import PRESETS
    from sgeo.pipeline.datasets import known_datasets
    from sgeo.pipeline.names import BENCHMARKS, DATASETS

    assert sorted(DATASETS) == known_datasets()
    assert sorted(BENCHMARKS) == sorted(LOADERS)
    assert all(name in cli.MODEL_HELP for name in PRESETS)


def test_visual_branches_help_lists_both_and_the_tower_names():
    """`sgeo train --help` names every value --visual-branches takes: `both` (the word the model's config
    uses) first, then the towers of SpatialGeo (the only command with the option)."""
    from sgeo.jobs.train.recipe import TrainConfig
    from sgeo.model import load_config
    from sgeo.model.configuration import ALL_BRANCHES

    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "visual_branches")
    text = field.metadata["sgeo.cli"].help
    assert text.startswith(f"{ALL_BRANCHES} (every tower's tokens) or one tower's name")
    assert all(name in text for name in load_config("tiny").tower_names)
    # and a value outside them is refused naming the same choices, before anything loads
    from types import SimpleNamespace

    from sgeo.errors import SgeoError
    from sgeo.jobs.train.setup import check_towers

    with pytest.raises(SgeoError, match=r"^--visual-branches must be one of both, clip, moge, got depth$"):
        check_towers(SimpleNamespace(visual_branches="depth", clip_drop=0.0), load_config("tiny"))


def test_help_imports_no_heavy_module():
    # the configs the commands are made from are imported with the CLI: they must stay light
    code = (
        "import sys, sgeo.cli; print(sorted({'numpy', 'PIL', 'torch', 'zarr', 'pyarrow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
