"""Every bad value is one clear error: option ranges and choices (exit 2 before any folder is made),
--device on a machine without that device, and the top-level handler of `main()` for emotk's own
errors, a permission error and a full disk. Each runs the real command line in a subprocess."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emotk.distributed import resolve_device
from emotk.errors import EmotkError
from tests.conftest import run_cli


def tree_hash(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path → digest)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def flat(text: str) -> str:
    """A usage error's text without the box drawing and line wrapping of its panel."""
    return " ".join(text.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def assert_usage_error(proc: subprocess.CompletedProcess, option: str) -> str:
    """Typer's usage error: exit 2, the option named, no traceback; returns the flattened message."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    message = flat(proc.stderr)
    assert f"Invalid value for '{option}'" in message, proc.stderr
    return message


def assert_one_line_error(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    """emotk's own error: exit 2, exactly one line `error: …` on stderr, naming ``phrases``."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ ranges and choices, before any folder

PREPARE = ["prepare", "affwild2", "--root", "."]
BAD_VALUES = [  # (arguments, option, bad value, the bound the message must state)
    (PREPARE, "--face-size", "0", "16"),
    (PREPARE, "--face-size", "8", "16"),
    (PREPARE, "--every", "0", "1"),
    (PREPARE, "--max-carry", "-1", "0"),
    (PREPARE, "--mood-neutral-band", "-0.5", "0"),
    (PREPARE, "--mood-neutral-band", "11", "10"),
    (PREPARE, "--mood-neutral-band", "inf", "10"),
    (PREPARE, "--mood-neutral-band", "nan", ""),  # rejected; which bound is named depends on typer's version
    (["extract"], "--image-size", "0", "16"),
    (["extract"], "--batch-size", "0", "1"),
    (["extract"], "--num-workers", "-1", "0"),
    (["extract"], "--every", "0", "1"),
    (["extract"], "--fps", "0", "> 0"),
    (["extract"], "--fps", "-25", "> 0"),
    (["extract"], "--fps", "inf", "> 0"),
    (["extract"], "--fps", "nan", ""),
    (["extract"], "--flush-frames", "0", "1"),
    (["extract"], "--nproc", "0", "1"),
    (["demo"], "--epochs", "0", "1"),
    (["demo"], "--epochs", "-3", "1"),
]


@pytest.mark.parametrize("args,option,value,bound", BAD_VALUES, ids=[f"{a[0]}{o}={v}" for a, o, v, _ in BAD_VALUES])
def test_out_of_range_values_exit_2_with_the_range_before_any_folder_exists(tmp_path, args, option, value, bound):
    ws = tmp_path / "ws"
    args = [*args, "--workspace", str(ws)] if args[0] == "demo" else args
    proc = run_cli(*args, option, value, workspace=ws, check=False)
    assert bound in assert_usage_error(proc, option)
    assert not ws.exists() and list(tmp_path.iterdir()) == []  # nothing was created


BAD_CHOICES = [
    (PREPARE, "--faces", "bogus", ["provided", "detect"]),
    (PREPARE, "--detector", "openface", ["mtcnn", "haar", "center"]),
    (PREPARE, "--decoder", "ffmpeg", ["auto", "decord", "av"]),
    (PREPARE, "--mood-rule", "median", ["mean", "majority"]),
    (["report"], "--format", "xlsx", ["md", "csv", "latex"]),
    (["models"], "--format", "yaml", ["table", "csv", "json"]),
]


@pytest.mark.parametrize("args,option,value,choices", BAD_CHOICES, ids=[f"{a[0]}{o}={v}" for a, o, v, _ in BAD_CHOICES])
def test_values_outside_a_closed_set_are_rejected_with_the_choices(tmp_path, args, option, value, choices):
    ws = tmp_path / "ws"
    proc = run_cli(*args, option, value, workspace=ws, check=False)
    message = assert_usage_error(proc, option)
    for choice in choices:
        assert f"'{choice}'" in message
    assert not ws.exists()


def test_weights_must_be_imagenet_none_or_an_existing_file(tmp_path):
    ws = tmp_path / "ws"
    proc = run_cli("extract", "--weights", str(tmp_path / "missing.pt"), workspace=ws, check=False)
    assert "'imagenet', 'none' or an existing state-dict file" in assert_usage_error(proc, "--weights")
    assert not ws.exists()


def test_typer_usage_errors_still_exit_2(tmp_path):
    for args in (["extract", "--no-such-option"], ["no-such-command"], ["prepare"], ["extract", "--batch-size", "many"]):
        proc = run_cli(*args, workspace=tmp_path / "ws", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Usage:" in proc.stderr, args


# ------------------------------------------------------------------ --device

def test_resolve_device():
    has_cuda = torch.cuda.is_available()
    assert resolve_device(None) == torch.device("cuda" if has_cuda else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(EmotkError, match="not a device name"):
        resolve_device("gpu0")
    with pytest.raises(EmotkError, match="cpu, cuda or cuda:N"):
        resolve_device("meta")
    if has_cuda:
        n = torch.cuda.device_count()
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
        with pytest.raises(EmotkError, match=f"has {n} CUDA GPU"):
            resolve_device(f"cuda:{n}")
    else:
        for name in ("cuda", "cuda:0"):
            with pytest.raises(EmotkError, match="no usable CUDA GPU.*--device cpu"):
                resolve_device(name)


def _missing_gpu() -> str:
    """A CUDA device name this machine lacks: 'cuda' without CUDA, else one index past the last GPU."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


@pytest.fixture(scope="module")
def prepared(mini_affwild2, tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("trust-ws")
    run_cli("prepare", "affwild2", "--root", str(mini_affwild2), "--quiet", workspace=ws)
    return ws


def test_extract_on_a_missing_gpu_is_one_sentence_and_changes_nothing(prepared):
    before = tree_hash(prepared)
    proc = run_cli("extract", "--weights", "none", "--device", _missing_gpu(), workspace=prepared, check=False)
    line = assert_one_line_error(proc, f"--device {_missing_gpu()}")
    assert "--device cpu" in line or "CUDA GPU(s)" in line
    proc = run_cli("extract", "--weights", "none", "--device", "gpu", workspace=prepared, check=False)
    assert_one_line_error(proc, "--device 'gpu' is not a device name", "cuda:N")
    assert tree_hash(prepared) == before


def test_demo_on_a_missing_gpu_writes_nothing(tmp_path):
    proc = run_cli("demo", "--device", _missing_gpu(), "--workspace", str(tmp_path / "demo"), check=False)
    assert_one_line_error(proc, f"--device {_missing_gpu()}")
    assert not (tmp_path / "demo").exists()


# ------------------------------------------------------------------ main(): the top-level handler

def _without_root_override() -> list[str]:
    """Run a child without the capabilities that let root read any file (so a 000 file is unreadable)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: permissions cannot be denied to this process")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_permission_error_is_one_line(prepared, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(prepared, ws)
    stamp = ws / "emotk-workspace.json"
    stamp.chmod(0)
    try:
        cmd = [*_without_root_override(), sys.executable, "-m", "emotk", "split", "--official"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, EMOTK_WORKSPACE=str(ws)))
    finally:
        stamp.chmod(0o644)
    line = assert_one_line_error(proc, str(stamp))
    assert "ermission denied" in line
    assert not (ws / "affwild2" / "splits").exists()


def test_full_disk_is_one_line(mini_affwild2, tmp_path):
    """A real ENOSPC: the workspace lies on a 4 KiB tmpfs already full (own mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {mnt}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    script = (f"mount -t tmpfs -o size=4k tmpfs {mnt} && head -c 4096 /dev/zero > {mnt}/filler; "
              f"{sys.executable} -m emotk prepare affwild2 --root {mini_affwild2} --quiet --workspace {mnt}/ws")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    assert_one_line_error(proc, "no space left on the device", "run the same command again")
