"""Every subcommand explains itself."""

from __future__ import annotations

import argparse

import pytest

from edge_agent.cli import build_parser, main


def _subcommands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found.extend(_subcommands(sub, (*prefix, name)))
    return found


COMMANDS = _subcommands(build_parser())


def test_the_commands_are_there() -> None:
    assert {("run",), ("status",), ("dead-letters", "replay"), ("simulate",), ("demo",)} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_subcommand_has_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: edge-agent {' '.join(command)}" in text
    assert len(text.splitlines()) >= 3


def test_help_lists_every_subcommand_with_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name, *_rest in COMMANDS:
        assert name in text


def test_a_bad_setting_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_MQTT__PORT", "abc")
    assert main(["status"]) == 2
    assert (
        capsys.readouterr().err
        == "edge-agent: [mqtt] port in $EDGE_AGENT_MQTT__PORT must be 1-65535, got 'abc'\n"
    )
