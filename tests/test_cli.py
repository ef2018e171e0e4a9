"""The ``synopsloss`` command line: suggestions for typos, ``--version``, and docs/cli.md lists every flag."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import synopsloss as sl
from synopsloss.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = (ROOT / "docs" / "cli.md").read_text()


def _exit(argv, capsys) -> tuple:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out = capsys.readouterr()
    return stop.value.code, out.out, out.err


@pytest.mark.parametrize("argv, usage, hint", [
    (["demo", "--epoch", "3", "--quiett"], "usage: synopsloss demo", "unrecognized arguments: --quiett (did you mean --quiet?)"),
    (["demo", "--no-plott"], "usage: synopsloss demo", "(did you mean --no-plot?)"),
    (["report", "m:f", "--inptu-shape=1,2"], "usage: synopsloss report", "(did you mean --input-shape?)"),
    (["report", "m:f", "--feed", "fold"], "usage: synopsloss report", "invalid choice: 'fold'"),
    (["demoo"], "usage: synopsloss ", "invalid choice: 'demoo'"),
    (["reprot", "m:f"], "usage: synopsloss ", "(did you mean report?)"),
])
def test_a_mistyped_flag_or_command_names_the_closest_one(argv, usage, hint, capsys):
    code, _, err = _exit(argv, capsys)
    assert code == 2
    assert err.startswith(usage), err
    assert hint in err, err


def test_feed_typo_suggests_the_choice(capsys):
    _, _, err = _exit(["report", "m:f", "--feed", "fold"], capsys)
    assert "(did you mean folded?)" in err


def test_nothing_close_gives_no_suggestion(capsys):
    _, _, err = _exit(["demo", "--zzzzzz"], capsys)
    assert "unrecognized arguments: --zzzzzz" in err and "did you mean" not in err


def test_version(capsys):
    code, out, _ = _exit(["--version"], capsys)
    assert code == 0 and out.strip() == f"synopsloss {sl.__version__}"
    import tomllib

    assert sl.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _section(command: str) -> str:
    start = CLI_DOC.index(f"## `synopsloss {command}`")
    end = CLI_DOC.find("\n## ", start + 1)
    return CLI_DOC[start:end if end > 0 else None]


FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


@pytest.mark.parametrize("command", ["demo", "report"])
def test_docs_cli_lists_exactly_the_flags_of_the_parser(command):
    parser = build_parser().commands[command]
    flags = set(parser.flags) - {"-h", "--help"}
    section = _section(command)
    documented = set(FLAG.findall(section))
    assert flags - documented == set(), f"docs/cli.md's {command} section lacks {sorted(flags - documented)}"
    assert documented - flags == set(), f"docs/cli.md's {command} section names unknown {sorted(documented - flags)}"
    # each flag has a row in the section's option table
    rows = {f for line in section.splitlines() if line.startswith("| `-") for f in FLAG.findall(line.split("|")[1])}
    assert flags - rows == set(), f"no option-table row for {sorted(flags - rows)}"
    for choice in parser.choices:
        assert f"`{choice}`" in section, choice


def test_docs_cli_lists_the_top_level_flags():
    flags = set(build_parser().flags) - {"-h", "--help"}
    top = CLI_DOC[:CLI_DOC.index("\n## ")]
    assert flags == {"--version"} and all(f in top for f in flags)
