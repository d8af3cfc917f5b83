"""The command line's wiring: every option reaches its config field with the config's default, and the help
lists what the registries hold."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sgeo import cli

# command -> (its line with only the required options, the module whose run_* it calls, that run_*);
# `_expected` gives the config that line should build
REQUIRED = {
    "train": (["train", "--stage", "1", "--data", "d.json", "--out", "o"], "sgeo.jobs.train", "run_train"),
    "ask": (["ask", "i.png"], "sgeo.jobs.ask", "run_ask"),
    "serve": (["serve"], "sgeo.jobs.serve", "run_serve"),
    "eval": (["eval", "--data", "b.json", "--out", "o"], "sgeo.jobs.eval", "run_eval"),
}


def _expected(command: str):
    from sgeo.jobs.ask import AskConfig
    from sgeo.jobs.eval import EvalConfig
    from sgeo.jobs.serve import ServeConfig
    from sgeo.jobs.train import TrainConfig

    return {
        "train": TrainConfig(stage=1, data=Path("d.json"), out=Path("o")),
        "ask": AskConfig(image=Path("i.png")),
        "serve": ServeConfig(),
        "eval": EvalConfig(data=Path("b.json"), out=Path("o")),
    }[command]


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
    expected = _expected(command)
    assert config == expected
    for field in dataclasses.fields(expected):  # same types too (Path stays Path, 1.0 stays float)
        assert type(getattr(config, field.name)) is type(getattr(expected, field.name)), field.name


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_every_config_field_is_an_option(command):
    function = {"train": cli.train, "ask": cli.ask, "serve": cli.serve, "eval": cli.evaluate}[command]
    options = set(inspect.signature(function).parameters)
    config = _expected(command)
    fields = {field.name for field in dataclasses.fields(config) if field.init}
    assert options == fields
    # and each option goes to the field of its own name: XConfig(stage=stage, out=out, ...)
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    (call,) = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == type(config).__name__
    ]
    assert not call.args
    assert all(isinstance(k.value, ast.Name) and k.value.id == k.arg for k in call.keywords)
    assert {k.arg for k in call.keywords} == fields


def test_help_names_come_from_the_registries():
    from sgeo.model.presets import PRESETS
    from sgeo.pipeline.benchmarks import LOADERS
    from sgeo.pipeline.datasets import known_datasets
    from sgeo.pipeline.names import BENCHMARKS, DATASETS

    assert sorted(DATASETS) == known_datasets()
    assert sorted(BENCHMARKS) == sorted(LOADERS)
    assert all(name in cli.MODEL_HELP for name in PRESETS)


def test_help_imports_no_heavy_module():
    code = "import sys, sgeo.cli; print(sorted({'numpy', 'PIL', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
