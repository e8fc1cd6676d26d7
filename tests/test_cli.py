"""The command line: help texts, and clear errors (exit 2, no traceback) for user mistakes."""

import re

import pytest

from tests.conftest import run_cli

COMMANDS = ["datasets", "prepare", "extract", "split", "train", "evaluate", "report", "models", "demo"]


def test_help_lists_every_command():
    out = run_cli("--help").stdout
    for cmd in COMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_with_example(cmd):
    out = run_cli(cmd, "--help").stdout
    assert re.search(r"Examples?:\s+emotk ", out), out


def test_wrong_root(tmp_path):
    out = run_cli("prepare", "affwild2", "--root", str(tmp_path / "nope"), workspace=tmp_path / "ws", check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "is not a folder" in out.stderr


def test_root_without_annotations(tmp_path):
    out = run_cli("prepare", "affwild2", "--root", str(tmp_path), workspace=tmp_path / "ws", check=False)
    assert out.returncode == 2 and "VA annotation folder" in out.stderr


def test_unknown_dataset(tmp_path):
    out = run_cli("prepare", "affwild3", "--root", str(tmp_path), workspace=tmp_path / "ws", check=False)
    assert out.returncode == 2 and "unknown dataset 'affwild3'" in out.stderr and "affwild2" in out.stderr


def test_unknown_encoder(mini_affwild2, tmp_path):
    run_cli("prepare", "affwild2", "--root", str(mini_affwild2), workspace=tmp_path)
    out = run_cli("extract", "--encoder", "regnet_y_9000", "--weights", "none", workspace=tmp_path, check=False)
    assert out.returncode == 2 and "unknown encoder 'regnet_y_9000'" in out.stderr and "Traceback" not in out.stderr


def test_nothing_prepared(tmp_path):
    out = run_cli("extract", "--weights", "none", workspace=tmp_path, check=False)
    assert out.returncode == 2 and "emotk prepare" in out.stderr


def test_newer_workspace_refused(tmp_path):
    (tmp_path / "emotk-workspace.json").write_text('{"emotk_version": "99.0.0"}')
    out = run_cli("split", "--official", workspace=tmp_path, check=False)
    assert out.returncode == 2 and "newer" in out.stderr


def test_demo_learns(tmp_path):
    """`emotk demo` runs the whole chain offline and the model learns (validation CCC clearly above 0)."""
    out = run_cli("demo", "--workspace", str(tmp_path / "demo"), "--quiet")
    line = [l for l in out.stdout.splitlines() if l.startswith("validation CCC")][0]
    ccc = float(line.split()[2])
    assert ccc > 0.3, out.stdout
    assert "extract --encoder regnet_y_400mf --weights none --device cpu" in out.stdout  # CPU unless --device
