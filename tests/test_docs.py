"""The README and docs/ stay true: every command line they show exists with the flags they
give it, every setting they document exists and every setting is documented, every relative
link leads to a file. Pure: the parsers are built in-process, nothing is run."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent import config
from edge_agent.cli import build_parser
from edge_agent.collector.cli import _parser as collector_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: The command names as they are typed, and the parser that reads each.
PROGRAMS = {"edge-agent": build_parser, "edge-agent-collector": collector_parser}
_PROGRAM = re.compile(r"(?:^|(?<=[\s`/]))(edge-agent(?:-collector)?)(?=\s|$)")
#: What may stand before a program name that runs it: nothing, its folder, sudo or exec.
_RUNS = re.compile(r"(^\s*|bin/|(^|\s)(sudo(\s+-u\s+\S+)?|exec|\$)\s+)$")
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _command_texts(text: str) -> Iterator[str]:
    """Each piece of text that shows a command: code block lines (with their continuation
    lines, indented under them or after a backslash) and inline code."""
    for block in _FENCE.findall(text):
        current = ""
        for line in block.split("\n"):
            if current and (line.startswith(" " * 10) or current.endswith("\\")):
                current = current.rstrip("\\") + " " + line.strip()
                continue
            if current:
                yield current
            current = line
        if current:
            yield current
    yield from _INLINE.findall(_FENCE.sub("", text))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def _read(program: str, words: list[str]) -> tuple[list[str], set[str]]:
    """What is wrong with ``program words...`` as the docs show it, and the commands it
    names (their ``prog``, e.g. ``edge-agent models list``).

    A synopsis may give alternatives (``list|pull NAME``, ``(--id N | --all)``) and
    placeholders in capitals; a lower-case word where a command is expected must be one.
    """
    chosen = [PROGRAMS[program]()]
    flags: list[str] = []
    problems: list[str] = []
    for word in words:
        for part in re.split(r"[|\[\]()]", word):
            part = part.split("=")[0].rstrip(".,:;")
            if part.startswith("-"):
                flags.append(part)
                continue
            children = {n: c for p in chosen for n, c in _subparsers(p).items()}
            if part in children:
                chosen.append(children[part])
            elif _subparsers(chosen[-1]) and re.fullmatch(r"[a-z][a-z-]*", part):
                problems.append(f"{chosen[-1].prog} has no command {part!r}")
    known = {"-h"}.union(*(_options(p) for p in chosen))
    problems += [f"{chosen[-1].prog} has no option {flag}" for flag in flags if flag not in known]
    return problems, {p.prog for p in chosen[1:]}


def _shown_commands() -> Iterator[tuple[str, str, list[str]]]:
    """``(document, program, words)`` for every command line the docs show."""
    for path in DOCS:
        for text in _command_texts(path.read_text(encoding="utf-8")):
            # Two spaces start a description; a shell operator ends the command.
            text = re.split(r"  | && | ; | > | 2>", text)[0]
            marks = list(_PROGRAM.finditer(text))
            if not marks:
                continue
            for mark, following in zip(marks, [*marks[1:], None], strict=True):
                if not _RUNS.search(text[: mark.start()]):
                    continue  # a user or unit of that name (useradd, journalctl -u), not a run
                rest = text[mark.end() : following.start() if following else None]
                try:
                    words = shlex.split(rest, comments=True)
                except ValueError:  # an apostrophe in a placeholder
                    words = rest.split()
                if words:
                    yield path.relative_to(REPO).as_posix(), mark.group(1), words


def test_every_command_shown_exists_with_its_flags() -> None:
    problems = [
        f"{where}: {problem}"
        for where, program, words in _shown_commands()
        for problem in _read(program, words)[0]
    ]
    assert problems == []


def test_the_docs_show_every_command() -> None:
    shown = set().union(*(_read(program, words)[1] for _, program, words in _shown_commands()))
    every = set()
    for build in PROGRAMS.values():
        stack = [build()]
        while stack:
            children = _subparsers(stack.pop())
            every |= {child.prog for child in children.values()}
            stack += children.values()
    assert sorted(every - shown) == []


def _documented_settings() -> dict[str, set[str]]:
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^```toml\n(.*?)^```", text, re.M | re.S)
    return {section: set(keys) for section, keys in tomllib.loads(block).items()}


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    real = {
        section: {f.name for f in dataclasses.fields(cls)}
        for section, cls in config._SECTIONS.items()
    }
    assert _documented_settings() == real


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file(path: Path) -> None:
    broken = []
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize(
    ("line", "bad"),
    [
        pytest.param("edge-agent status --json", False, id="real"),
        pytest.param(
            "edge-agent models list|pull NAME...|rollback NAME|train [--quick]",
            False,
            id="alternatives",
        ),
        pytest.param("edge-agent status --colour", True, id="unknown-flag"),
        pytest.param("edge-agent screens add --device D --label L", False, id="nested"),
        pytest.param("edge-agent screens add --till T", True, id="nested-unknown-flag"),
        pytest.param("edge-agent telepathy", True, id="unknown-command"),
    ],
)
def test_the_command_check_catches_what_help_would_refuse(line: str, bad: bool) -> None:
    program, *words = shlex.split(line)
    assert bool(_read(program, words)[0]) == bad
