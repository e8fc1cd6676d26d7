import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# emotk's native NA kernel is built once per test session (and by every CLI subprocess from the same folder)
os.environ.setdefault("EMOTK_KERNEL_CACHE", tempfile.mkdtemp(prefix="emotk-kernels-"))

MINI_TRACKS = {
    "10-60-1280x720_left": ("Train_Set", 40),
    "10-60-1280x720_right": ("Train_Set", 40),
    "122-60-1920x1080-1": ("Train_Set", 36),
    "122-60-1920x1080-2": ("Train_Set", 36),
    "102": ("Train_Set", 44),
    "video45_1": ("Validation_Set", 40),
    "24-30-640x360": ("Validation_Set", 48),
}


def run_cli(*args: str, workspace: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `emotk` command line in a subprocess."""
    env = dict(os.environ)
    if workspace is not None:
        env["EMOTK_WORKSPACE"] = str(workspace)
    proc = subprocess.run([sys.executable, "-m", "emotk", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"emotk {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def mini_affwild2(tmp_path_factory) -> Path:
    """A miniature Aff-Wild2 release in its real layout (jpg crops, txt annotations)."""
    from emotk.synth import make_affwild2

    root = tmp_path_factory.mktemp("affwild2-raw")
    make_affwild2(root, tracks=MINI_TRACKS, seed=3, invalid_rows=3, missing_crops=2, extra_label_line="102")
    return root
