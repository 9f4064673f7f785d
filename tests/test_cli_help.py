"""Every `gometal ... --help` page reads as written: no doubled `%` from argparse escaping."""

import argparse

import pytest

from gometal.apps.cli import build_parser, main


def _command_names():
    parser = build_parser()
    for action in parser._actions:  # argparse keeps sub-commands as one action's choices
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("the gometal parser has no sub-commands")


def _help_text(capsys, argv):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 0
    return capsys.readouterr().out


def test_the_commands_are_the_documented_ones():
    assert _command_names() == [
        "generate",
        "launch",
        "predict",
        "serve",
        "sidecar",
        "train",
        "train-digits",
        "train-lm",
    ]


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in _command_names()])
def test_help_has_no_doubled_percent_sign(capsys, argv):
    text = _help_text(capsys, argv)
    assert text.startswith("usage: gometal")
    assert "%%" not in text


def test_train_digits_help_says_20_percent(capsys):
    text = " ".join(_help_text(capsys, ["train-digits", "--help"]).split())
    assert "holding out 20% of the images" in text
