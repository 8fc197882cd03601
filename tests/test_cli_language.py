"""The commands speak one language: a concept has one name, type and default everywhere, help shows every
default without Python type names, and arguments the words alone can refute fail before torch loads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from srcli.cli import app
from srcli.cli.common import SCALE_DEFAULT_TEXT, run_options
from srcli.registry import DEFAULT_MODEL
from tests.cli_probe import run_fresh

REPO = Path(__file__).resolve().parents[1]

#: The commands that run a model, and so share its options.
RUN_COMMANDS = ("upscale", "eval", "bench", "train")

#: The options that describe how a model runs, with the default every run command shows.
SHARED_DEFAULTS: dict[str, Any] = {
    "--model": DEFAULT_MODEL,
    "--scale": SCALE_DEFAULT_TEXT,
    "--weights": "pinned",
    "--device": "auto",
    "--precision": "auto",
    "--tile": "auto",
    "--tile-overlap": "the model's",
    "--batch": "4 on CUDA, else 1",
    "--compile": None,
    "--self-ensemble": None,
    "--outscale": "the model's scale",
    "--threads": "torch's choice",
    "--cache-dir": "$SRCLI_CACHE_DIR or the user's",
    "--offline": None,
}

#: (command, option) pairs that differ on purpose, and why.
EXCEPTIONS = {
    ("eval", "--model"): "several models, and none by default: a benchmark run names what it scores",
    ("train", "--model"): "required for a new run: there is no default model to train",
    ("eval", "--scale"): "several scales (-s 2,3,4); the default is the same",
    ("eval", "--precision"): "fp32 by default: the papers' protocol",
    ("bench", "--tile"): "bench times one fixed tile size (0: the whole image), never 'auto'",
    ("bench", "--batch"): "images per run (whole image) or tiles per pass: 1 unless asked",
    ("train", "--batch"): "patches per training batch",
    ("bench", "--weights"): "random (no download), pinned or a checkpoint file",
}


def _walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


def _commands() -> dict[str, Any]:
    """Every command and group, by its path after ``srcli`` ("" for the root)."""
    return {" ".join(path): cmd for path, cmd in _walk(typer.main.get_command(app), ())}


def _options(cmd: Any, name: str) -> dict[str, tuple[tuple[str, ...], str | None, Any]]:
    """Visible options by long name: (every spelling, type label shown, default shown)."""
    ctx = cmd.context_class(cmd, info_name=name or "srcli")
    found = {}
    for param in cmd.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        if isinstance(param.show_default, str):
            default = param.show_default
        else:
            default = None if param.default in (None, False) else param.default
        long = next(o for o in param.opts if o.startswith("--"))
        found[long] = (tuple(sorted(param.opts)), param.display_type_rich(ctx), default)
    return found


def test_the_shared_options_have_one_name_type_and_default() -> None:
    commands = _commands()
    options = {name: _options(commands[name], name) for name in RUN_COMMANDS}
    problems = []
    for option, default in SHARED_DEFAULTS.items():
        seen = {name: opts[option] for name, opts in options.items() if option in opts}
        assert seen, f"no command has {option}"
        plain = {name: got for name, got in seen.items() if (name, option) not in EXCEPTIONS}
        spellings = {got[0] for got in plain.values()}
        labels = {got[1] for got in plain.values()}
        if len(spellings) > 1 or len(labels) > 1:
            problems.append(f"{option}: {plain}")
        for name, got in plain.items():
            if got[2] != default:
                problems.append(f"{name} {option}: default {got[2]!r}, not {default!r}")
        reference = next(iter(plain.values()))[0] if plain else None
        for name in seen.keys() - plain.keys():  # even the exceptions keep the spellings
            if reference is not None and seen[name][0] != reference:
                problems.append(f"{name} {option}: spelled {seen[name][0]}, not {reference}")
    assert not problems, "\n".join(problems)
    # Where a run command takes an option, it is the shared one: these are in every run command.
    for option in ("--device", "--threads", "--cache-dir", "--offline", "--scale", "--model"):
        assert all(option in opts for opts in options.values()), option


def test_old_spellings_are_hidden_aliases() -> None:
    commands = _commands()
    hidden = {name: {o for p in commands[name].params if p.hidden for o in p.opts} for name in ("bench", "train")}
    assert "--overlap" in hidden["bench"]
    assert {"--batch-size", "--out"} <= hidden["train"]
    assert "--overlap" not in _options(commands["bench"], "bench")
    assert not {"--batch-size", "--out"} & set(_options(commands["train"], "train"))


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """``srcli ... --help`` of every command and group, 200 columns wide."""
    runner = CliRunner()
    pages = {}
    for name in _commands():
        result = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
        assert result.exit_code == 0, (name, result.output)
        pages[name] = result.output
    return pages


def test_help_has_no_python_type_names_and_plain_usage_lines(helps: dict[str, str]) -> None:
    assert len(helps) >= 10
    for name, page in helps.items():
        assert "<bool>" not in page and "<list" not in page, name
        usage = [line for line in page.splitlines() if "Usage:" in line]
        assert usage and not any("{" in line for line in usage), (name, usage)
    assert "INPUTS..." in helps["upscale"]
    assert "video" in helps[""].lower()


def test_help_shows_the_defaults(helps: dict[str, str]) -> None:
    flat = {name: " ".join(page.split()) for name, page in helps.items()}
    for name in ("bench", "eval", "train"):
        assert "[default: auto]" in flat[name]  # --device
        assert f"[default: ({SCALE_DEFAULT_TEXT})]" in flat[name]
        assert "[default: (torch's choice)]" in flat[name]
    assert f"[default: {DEFAULT_MODEL}]" in flat["bench"]
    assert "[default: fp32]" in flat["eval"]
    assert "[default: (16)]" in flat["train"] and "[default: (set5)]" in flat["train"]


def test_run_options_builds_the_engine_record() -> None:
    options = run_options(tile="0", weights=Path("w.pth"), cache_dir=Path("c"), offline=False)
    assert options.model == DEFAULT_MODEL and options.scale is None
    assert (options.tile, options.weights, options.cache_dir, options.offline) == (0, "w.pth", "c", None)
    assert run_options(model="imdn", offline=True, tile="auto").offline is True


#: Argument errors, each refuted by ``check_run`` (or the words alone) before torch loads.
BAD_ARGUMENTS = [
    (["eval", "-m", "nosuch", "-d", "set5"], "unknown model 'nosuch'"),
    (["eval", "-m", "imdn", "-s", "5", "-d", "set5"], "no x5 variant"),
    (["eval", "-m", "imdn", "-d", "set5", "--precision", "fp8"], "--precision must be one of"),
    (["eval", "-m", "bicubic", "-d", "set5", "--precision", "fp16", "--device", "cpu"], "fp16 is not supported"),
    (["bench", "-m", "nosuch"], "unknown model 'nosuch'"),
    (["bench", "-s", "7"], "no x7 variant"),
    (["bench", "--precision", "half"], "--precision must be one of"),
    (["bench", "--tile", "8"], "--tile 8 is too small"),
    (["bench", "--tile", "big"], "--tile must be"),
    (["bench", "--device", "cpu", "--precision", "fp16"], "fp16 is not supported"),
    (["train", "-m", "nosuch", "--train-dir", "x", "-o", "y"], "unknown model 'nosuch'"),
    (["train", "-m", "survey-net", "-s", "5", "--train-dir", "x", "-o", "y"], "no x5 variant"),
    (["train", "-m", "bicubic", "--train-dir", "x", "-o", "y"], "no parameters to train"),
]


@pytest.mark.slow
def test_argument_errors_fail_in_one_line_before_torch_loads() -> None:
    env = {**os.environ, "COLUMNS": "200", "SRCLI_OFFLINE": "1"}
    seen = run_fresh([argv for argv, _ in BAD_ARGUMENTS], cwd=REPO, env=env)
    for (argv, message), (code, err, torch_loaded) in zip(BAD_ARGUMENTS, seen, strict=True):
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)
        assert not torch_loaded, argv
