"""The README's `primkd` commands run as written: each is parsed by the CLI's own argument parser (placeholders
such as ``...``, ``NAME`` or ``<preset>`` stand for values, ``a|b`` for a choice, ``[...]`` for an optional part);
`primkd --version` prints the installed version."""

import argparse
import itertools
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from primkd.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """Every `primkd ...` of the README: inline code spans (the tables' and the text's) and code-block lines."""
    text = README.read_text()
    spans = re.findall(r"`(primkd [^`]+)`", text)
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [" ".join(c.replace("\\|", "|").split()) for c in spans + [x for x in lines if x.startswith("primkd ")]]


def words(command: str) -> list[str]:
    """The arguments as a user would type them: the first choice of ``a|b``, optional ``[...]`` parts included."""
    return [w.split("|")[0] for w in shlex.split(command.replace("[", "").replace("]", ""))[1:]]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) > 15 and any(c.startswith("primkd evaluate --model") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command, capsys):
    parser = build_parser()
    args = words(command)
    if args[0].startswith("<"):  # `primkd <stage> --help`: any command
        return
    if not args[0].startswith("-"):
        assert args[0] in subcommands(parser), f"README: `{command}`: primkd has no command {args[0]!r}"
        if len(args) == 1:  # a command named, not run
            return
    known = subcommands(parser)[args[0]]._option_string_actions if args[0] in subcommands(parser) else {}
    # `...` is a value after an option that takes one (`--data ...`), else it elides options
    # (`primkd evaluate --model model.pt ...`): then the options given must exist
    if any(w == "..." and not (prev in known and known[prev].nargs != 0) for prev, w in itertools.pairwise(args)):
        unknown = [w for w in args[1:] if w.startswith("--") and w.split("=")[0] not in known]
        assert not unknown, f"README: `{command}`: {args[0]} has no option {', '.join(unknown)}"
        return
    try:
        parser.parse_args(args)
    except SystemExit as e:  # 0: --help or --version, which print and exit
        if e.code:
            pytest.fail(f"README: `{command}` does not parse: {capsys.readouterr().err.strip().splitlines()[-1]}")


def test_version_is_the_installed_packages():
    proc = subprocess.run([sys.executable, "-m", "primkd", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"primkd {version('primkd')}\n"
    assert "`primkd --version`" in README.read_text()
