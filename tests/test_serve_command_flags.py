"""`gometal serve`'s batching flags reach `gm.serve` as the arguments they name, and the command
line's defaults are the server's."""

from __future__ import annotations

import argparse

import pytest

from gometal.apps import serve_command
from gometal.serving import server


def _parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_command.add_serve_command(parser.add_subparsers())
    return parser.parse_args(["serve", "models", *flags])


@pytest.mark.parametrize(("flags", "expected"), [((), True), (("--no-start-when-idle",), False)])
def test_start_when_idle_reaches_serve(flags, expected, monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr("gometal.serving.serve", lambda repository, **kw: seen.update(kw))
    assert serve_command.run_serve(_parse(*flags, "--max-queue-delay-ms", "3")) == 0
    assert seen["start_when_idle"] is expected
    assert seen["max_queue_delay_ms"] == 3.0


def test_the_command_line_starts_a_lone_request_as_the_server_does() -> None:
    assert _parse().start_when_idle is server.DEFAULT_SETTINGS.start_when_idle


@pytest.mark.parametrize(
    ("flags", "expected"), [(("--gather-while-busy",), True), (("--no-gather-while-busy",), False)]
)
def test_gather_while_busy_reaches_serve(flags, expected, monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr("gometal.serving.serve", lambda repository, **kw: seen.update(kw))
    assert serve_command.run_serve(_parse(*flags)) == 0
    assert seen["gather_while_busy"] is expected


def test_the_command_line_gathers_while_busy_as_the_server_does() -> None:
    assert _parse().gather_while_busy is server.DEFAULT_SETTINGS.gather_while_busy
