"""`gometal sidecar` refuses a taken port or a file as --data-dir in one line, before starting."""

import socket
import subprocess
import sys

import pytest

ARGPARSE_USAGE_ERROR = 2


def _sidecar(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "gometal.apps.cli", "sidecar", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=120,  # a sidecar that started anyway would run until this kills it
    )


@pytest.fixture
def occupied_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_port_in_use_is_one_error_and_no_announcement(tmp_path, occupied_port):
    done = _sidecar(tmp_path, "--port", str(occupied_port), "--data-dir", str(tmp_path / "plots"))
    assert done.returncode == ARGPARSE_USAGE_ERROR
    assert done.stdout == ""  # no URL announced for a service that never listened
    assert done.stderr.startswith(f"gometal sidecar: port {occupied_port} on 127.0.0.1 is in use")
    assert done.stderr.count("\n") == 1
    assert "--port" in done.stderr


def test_a_data_dir_that_is_a_file_is_one_error(tmp_path):
    taken = tmp_path / "plots.txt"
    taken.write_text("not a folder")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = _sidecar(tmp_path, "--port", str(port), "--data-dir", str(taken))
    assert done.returncode == ARGPARSE_USAGE_ERROR
    assert done.stdout == ""
    assert done.stderr == (
        f"gometal sidecar: --data-dir {str(taken)!r} is a file; "
        "pass a folder (it is created if missing)\n"
    )
    assert taken.read_text() == "not a folder"


def test_a_data_dir_below_a_file_is_one_error(tmp_path):
    taken = tmp_path / "plots.txt"
    taken.write_text("not a folder")
    done = _sidecar(tmp_path, "--data-dir", str(taken / "plots"))
    assert done.returncode == ARGPARSE_USAGE_ERROR
    assert done.stderr.startswith("gometal sidecar: --data-dir ")
    assert "cannot be written (Not a directory)" in done.stderr
    assert done.stderr.count("\n") == 1


def test_an_address_this_machine_does_not_have_is_one_error(tmp_path):
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never assigned to a real interface.
    done = _sidecar(tmp_path, "--host", "192.0.2.1", "--data-dir", str(tmp_path / "plots"))
    assert done.returncode == ARGPARSE_USAGE_ERROR
    assert done.stdout == ""
    assert done.stderr.startswith("gometal sidecar: cannot listen on 192.0.2.1 port 8080")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "1e-300"])
def test_a_body_limit_that_is_not_a_byte_count_is_an_argparse_error(tmp_path, value):
    done = _sidecar(tmp_path, "--max-body-mb", value, "--data-dir", str(tmp_path / "plots"))
    assert done.returncode == ARGPARSE_USAGE_ERROR
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "gometal sidecar: error: argument --max-body-mb: must be a finite number of MB, "
        f"at least one byte (1e-6 MB), got {value}"
    )
