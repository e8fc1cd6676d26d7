"""Issue 10, the feature store / files / workspace part: damaged caches are named and recomputed,
stale features are recomputed, names cannot be paths, a full disk is one clear message, outputs
follow the umask, one extraction at a time writes a cache, garbage workspace files are one error.

Each expected value comes from outside the code under test: a reference extraction made before the
damage, bytes flipped at the offset HDF5 reports, a hand-written list of names, the umask arithmetic,
the pid of the process the test started.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import torch

from emotk.atomic import atomic_path, write_json, write_text
from emotk.datasets import prepare_dataset
from emotk.errors import DiskFullError, FeatureStoreError, WorkspaceError
from emotk.features.extract import extract_frames
from emotk.features.store import FeatureStore, FeatureWriter, part_files, parts_dir
from emotk.locks import OutputLockedError, output_lock
from emotk.workspace import NAME_PATTERN, Workspace, check_name
from tests.procs import assert_same_store, emotk, env, store_arrays

OPTS = dict(encoder="regnet_y_400mf", weights="none", image_size=64, batch_size=16, num_workers=0, progress=False)
CLI_EXTRACT = ["extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "64",
               "--batch-size", "16", "--num-workers", "0", "--quiet"]
CACHE = "affwild2/features/regnet_y_400mf.h5"
SMALL = ["102", "video45_1"]  # the samples of the small workspace (disk and lock tests)


def _clean_error(proc) -> str:
    """exit 2, one line ``error: …``, no traceback; returns stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, proc.stderr
    return proc.stderr


def _tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _copy(src: Path, dst: Path, features: bool = True) -> Workspace:
    shutil.copytree(src, dst, ignore=None if features else shutil.ignore_patterns("features"))
    return Workspace.open(dst)


def _flip(path: Path, offset: int, n: int = 8) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(n)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in old))


@pytest.fixture(scope="module")
def raw(mini_affwild2, tmp_path_factory) -> Path:
    """A private copy of the raw release (the stale-crop test rewrites a crop)."""
    dst = tmp_path_factory.mktemp("trust-raw") / "raw"
    shutil.copytree(mini_affwild2, dst)
    return dst


@pytest.fixture(scope="module")
def small(raw, tmp_path_factory) -> Workspace:
    """The prepared dataset cut to two samples (a manifest of two rows), not extracted."""
    ws = Workspace.open(tmp_path_factory.mktemp("trust-small") / "ws")
    prepare_dataset(ws, "affwild2", raw)
    manifest = pl.read_parquet(ws.manifest_path("affwild2")).filter(pl.col("sample_id").is_in(SMALL))
    manifest.write_parquet(ws.manifest_path("affwild2"))
    return ws


@pytest.fixture(scope="module")
def ready(small, tmp_path_factory) -> Workspace:
    """The small workspace extracted in this process (the reference for in-process extractions)."""
    ws = _copy(small.root, tmp_path_factory.mktemp("trust-ready") / "ws")
    extract_frames(ws, "affwild2", **OPTS)
    return ws


@pytest.fixture(scope="module")
def small_reference(small, tmp_path_factory) -> dict:
    """Features of the small workspace by an uninterrupted `emotk extract` (processes of one thread,
    like every command these tests start: the thread count changes CPU kernels' rounding)."""
    ws = _copy(small.root, tmp_path_factory.mktemp("trust-small-ref") / "ws")
    emotk(*CLI_EXTRACT, workspace=ws.root)
    return store_arrays(ws.feature_path("affwild2", "regnet_y_400mf"))


# --- 1. checksums ------------------------------------------------------------------------------------

def test_flipped_bytes_in_the_cache_are_named_and_extract_recomputes_them(ready, tmp_path):
    ws = _copy(ready.root, tmp_path / "ws")
    cache = ws.feature_path("affwild2", "regnet_y_400mf")
    with h5py.File(cache, "r") as f:
        offset = f["102"].id.get_offset()  # where HDF5 put the sample's array in the file
        assert offset is not None
    _flip(cache, offset + 100)
    with FeatureStore(cache) as store:
        with pytest.raises(FeatureStoreError) as err:
            store.read("102")
        store.read("video45_1")  # the others still read
    message = str(err.value)
    assert str(cache) in message and "'102'" in message and "emotk extract" in message and "delete" in message
    # training on it: one clear error, exit 2 (was: exit 0, ccc = nan, run marked finished)
    emotk("split", "--official", workspace=ws.root)
    proc = emotk("train", "gru", "--epochs", "1", "--seq-len", "16", "--select-on", "last", "--quiet",
                 workspace=ws.root, check=False)
    assert "'102'" in _clean_error(proc) and "damaged" in proc.stderr
    # extract again: only the damaged sample is recomputed, bit-identical to the reference
    summary = extract_frames(ws, "affwild2", **OPTS)
    assert summary.done == 1 and summary.damaged == 1 and summary.skipped_existing == 1
    assert any("1 damaged" in line for line in summary.lines())
    assert_same_store(store_arrays(cache), store_arrays(ready.feature_path("affwild2", "regnet_y_400mf")))


def test_flipped_bytes_in_a_part_file_and_values_rewritten_through_hdf5(tmp_path):
    path = tmp_path / "features/x.h5"
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 8)).astype(np.float16), rng.standard_normal((20, 8)).astype(np.float16)
    w = FeatureWriter(path, {"encoder": "x"}, flush_frames=1)
    w.add("a", a)
    w.add("b", b)  # two part files, not merged
    part_a = next(p for p in part_files(path) if "a" in h5py.File(p, "r"))
    with h5py.File(part_a, "r") as f:
        offset = f["a"].id.get_offset()
    _flip(part_a, offset + 4)
    with FeatureStore(path) as store, pytest.raises(FeatureStoreError, match=f"{part_a.name}: sample 'a' is damaged"):
        store.read("a")
    # bytes changed by a valid HDF5 write (a tool, a bug): the sha256 written with the sample catches it
    part_b = next(p for p in part_files(path) if p != part_a)
    with h5py.File(part_b, "r+") as f:
        f["b"][0, 0] = np.float16(123.0)
    w = FeatureWriter(path, {"encoder": "x"})
    inv = w.inventory()
    assert inv.done == set() and set(inv.damaged) == {"a", "b"} and "sha256" in inv.damaged["b"]
    # a recomputed copy, written later, replaces the damaged one; the merge keeps the good copy only
    w.add("a", a)
    w.add("b", b)
    w.finalize()
    with FeatureStore(path) as store:
        assert np.array_equal(store.read("a")[0], a) and np.array_equal(store.read("b")[0], b)
    assert not parts_dir(path).exists()


def test_unreadable_cache_file_is_set_aside_and_rebuilt(small, small_reference, tmp_path):
    ws = _copy(small.root, tmp_path / "ws")
    cache = ws.feature_path("affwild2", "regnet_y_400mf")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(5000))  # HDF5 signature, garbage after it
    with pytest.raises(FeatureStoreError, match="not a readable HDF5 file"):
        FeatureStore(cache)
    out = emotk(*CLI_EXTRACT, workspace=ws.root).stdout
    assert "2 extracted" in out and "moved to regnet_y_400mf.h5.unreadable" in out
    assert cache.with_name(cache.name + ".unreadable").exists()
    assert_same_store(store_arrays(cache), small_reference)


# --- 4. stale features ---------------------------------------------------------------------------------

def test_changed_crops_and_prepare_options_make_features_stale(ready, raw, tmp_path):
    ws = _copy(ready.root, tmp_path / "ws")
    cache = ws.feature_path("affwild2", "regnet_y_400mf")
    before = store_arrays(cache)
    crops = raw / "cropped_aligned" / "102"
    saved = (crops / "00010.jpg").read_bytes()
    try:
        shutil.copyfile(crops / "00030.jpg", crops / "00010.jpg")  # prepare made a different crop of frame 10
        summary = extract_frames(ws, "affwild2", **OPTS)
        assert summary.stale == 1 and summary.done == 1 and summary.skipped_existing == 1
        after = store_arrays(cache)
        # an extraction from scratch on the new crops is the expectation
        fresh = _copy(ready.root, tmp_path / "fresh", features=False)
        extract_frames(fresh, "affwild2", **OPTS)
        assert_same_store(after, store_arrays(fresh.feature_path("affwild2", "regnet_y_400mf")))
        assert not np.array_equal(after["102"][0], before["102"][0])
        assert all(np.array_equal(after[s][0], before[s][0]) for s in before if s != "102")
    finally:
        (crops / "00010.jpg").write_bytes(saved)
    # prepare run again with other options: every sample is stale
    info = ws.read_info("affwild2")
    write_json(ws.info_path("affwild2"), {**info, "options": {**info.get("options", {}), "face_size": 96}})
    summary = extract_frames(ws, "affwild2", **OPTS)
    assert summary.stale == 2 and summary.done == 2
    # a rerun with nothing changed recomputes nothing (--quiet is not a prepare option that matters)
    info = ws.read_info("affwild2")
    write_json(ws.info_path("affwild2"), {**info, "options": {**info["options"], "progress": False}})
    summary = extract_frames(ws, "affwild2", **OPTS)
    assert summary.stale == 0 and summary.done == 0 and summary.skipped_existing == 2


# --- 2. names are not paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["affwild2", "regnet_y_400mf", "r400-15fps", "subject-k5", "a.b", "A1", "x" * 128])
def test_valid_names(name):
    assert check_name(name, "--name") == name


@pytest.mark.parametrize("name", ["", ".", "..", "../manifest", "../../../x", "a/b", "/abs", "-x", ".hidden",
                                  "a b", "a\\b", "é", "x" * 129, "a\nb"])
def test_invalid_names_are_refused_naming_option_and_pattern(name):
    with pytest.raises(WorkspaceError) as err:
        check_name(name, "--name")
    assert "--name" in str(err.value) and NAME_PATTERN in str(err.value)


def test_every_workspace_path_checks_its_names(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    for call in (lambda: ws.dataset_dir(".."), lambda: ws.feature_path("affwild2", "../../../x"),
                 lambda: ws.split_path("affwild2", "../manifest"), lambda: ws.manifest_path("../x"),
                 lambda: ws.run_path("affwild2", "..", "fold0-seed1")):
        with pytest.raises(WorkspaceError, match="not a valid name"):
            call()
    assert ws.run_path("affwild2", "gru-sm", "official", "official-seed1") == ws.root / "runs/affwild2/gru-sm/official/official-seed1"
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.inside(tmp_path / "elsewhere")


def test_names_that_are_paths_are_refused_at_the_cli(small, tmp_path):
    ws = _copy(small.root, tmp_path / "ws")
    before = _tree_hashes(tmp_path)
    proc = emotk("split", "--official", "--name", "../manifest", workspace=ws.root, check=False)
    assert "../manifest" in _clean_error(proc) and NAME_PATTERN in proc.stderr
    proc = emotk(*CLI_EXTRACT, "--name", "../../../x", workspace=ws.root, check=False)
    assert "../../../x" in _clean_error(proc)
    assert _tree_hashes(tmp_path) == before  # the manifest intact, nothing written anywhere


# --- 3. disk full --------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of the requested size at a fresh folder (needs root and mount rights)."""
    mounted = []

    def make(size: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        size = (size + 4095) // 4096 * 4096
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.decode().strip()[:100]}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_in_an_atomic_write_keeps_the_old_file(small_disk):
    disk = small_disk(64 * 1024)
    target = disk / "out.json"
    write_text(target, "old\n")
    with pytest.raises(DiskFullError) as err:
        write_text(target, "x" * 200_000, what="the test output")
    message = str(err.value)
    assert "no space left" in message and "the test output" in message and "free" in message.lower()
    assert target.read_text() == "old\n" and [p.name for p in disk.iterdir()] == ["out.json"]
    # torch.save reports a full disk as "unexpected pos …": still a DiskFullError (checkpoints)
    with pytest.raises(DiskFullError, match="checkpoint"):
        with atomic_path(disk / "checkpoint.pt", ".pt", what="the checkpoint") as tmp:
            torch.save({"w": torch.zeros(100_000)}, tmp)
    assert [p.name for p in disk.iterdir()] == ["out.json"]


def _du(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_full_disk_while_extracting_then_while_merging(small, small_reference, small_disk):
    cache_bytes = sum(f.nbytes + m.nbytes for f, m in small_reference.values())
    # room for the workspace and a third of the features: a part file cannot be written
    disk = small_disk(_du(small.root) + 64 * 1024 + cache_bytes // 3)
    ws = _copy(small.root, disk / "ws")
    proc = emotk(*CLI_EXTRACT, "--flush-frames", "1", workspace=ws.root, check=False)
    message = _clean_error(proc)
    assert "no space left" in message and "part file of the feature cache" in message
    assert not ws.feature_path("affwild2", "regnet_y_400mf").exists()
    assert ws.read_manifest("affwild2").height == 2  # earlier outputs intact

    # room for all the parts but not for the merged file next to them: checked before writing
    disk = small_disk(_du(small.root) + 64 * 1024 + int(cache_bytes * 1.5))
    ws = _copy(small.root, disk / "ws")
    proc = emotk(*CLI_EXTRACT, "--flush-frames", "1", workspace=ws.root, check=False)
    message = _clean_error(proc)
    assert "merging" in message and "are needed" in message
    cache = ws.feature_path("affwild2", "regnet_y_400mf")
    parts = part_files(cache)
    assert len(parts) == 2 and not cache.exists()  # the parts kept, readable
    assert_same_store(store_arrays(cache), small_reference)
    # with space again the same command finishes the merge, nothing recomputed
    shutil.move(str(ws.root), str(disk.parent / "moved"))
    out = emotk(*CLI_EXTRACT, "--flush-frames", "1", workspace=disk.parent / "moved")
    assert "0 extracted, 2 already there" in out.stdout
    assert_same_store(store_arrays(disk.parent / "moved" / CACHE), small_reference)


# --- 5. umask ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        w = FeatureWriter(tmp_path / "features/x.h5", {"encoder": "x"})
        w.add("a", np.zeros((3, 4), np.float16))
        w.flush()
        part_mode = part_files(tmp_path / "features/x.h5")[0].stat().st_mode & 0o777
        w.finalize()
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == want
    assert part_mode == want and (tmp_path / "features/x.h5").stat().st_mode & 0o777 == want


# --- 6. one extraction at a time -----------------------------------------------------------------------

HOLD = """
import sys, time
from emotk.locks import output_lock
with output_lock(sys.argv[1], what="test holder", notify=None):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True,
                            env=env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_extract_waits_for_the_holder_or_gives_up_naming_it(small, small_reference, tmp_path):
    ws = _copy(small.root, tmp_path / "ws")
    cache = ws.feature_path("affwild2", "regnet_y_400mf")
    holder = _hold(cache, 60)
    try:
        with pytest.raises(OutputLockedError) as err:
            extract_frames(ws, "affwild2", lock_timeout=0.5, **OPTS)
        assert f"pid {holder.pid}" in str(err.value) and os.uname().nodename in str(err.value)
        assert not cache.exists() and not parts_dir(cache).exists()  # it did not start
    finally:
        holder.kill()
        holder.wait()
    holder = _hold(cache, 600)
    proc = subprocess.Popen([sys.executable, "-m", "emotk", *CLI_EXTRACT], env=env(ws.root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    waiting = proc.stderr.readline()  # it waits, saying for whom
    assert f"being written by pid {holder.pid} on host {os.uname().nodename}" in waiting, waiting
    time.sleep(0.5)
    assert proc.poll() is None and not parts_dir(cache).exists()  # still waiting, nothing written
    holder.kill()  # the lock goes with its holder, however it ends
    holder.wait()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "2 extracted" in out, err
    assert_same_store(store_arrays(cache), small_reference)


def test_two_extracts_at_once_do_the_work_once(small, small_reference, tmp_path):
    ws = _copy(small.root, tmp_path / "ws")
    cache = ws.feature_path("affwild2", "regnet_y_400mf")
    # Both start while a third process holds the cache, so they overlap however slowly each starts up
    # (two extracts started together need not overlap on a loaded machine: the first may finish first).
    holder = _hold(cache, 600)
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "emotk", *CLI_EXTRACT], env=env(ws.root),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for proc in procs:
            waiting = proc.stderr.readline()  # each waits, saying for whom
            assert f"being written by pid {holder.pid}" in waiting, waiting
    finally:
        holder.kill()  # now both race for the lock: one extracts, the other waits for it and finds the work done
        holder.wait()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    joined = " ".join(o for o, _ in outs)
    assert "2 extracted, 0 already there" in joined and "0 extracted, 2 already there" in joined
    assert_same_store(store_arrays(cache), small_reference)


def test_lock_is_reentrant_and_released_on_exit(tmp_path):
    target = tmp_path / "out.h5"
    with output_lock(target, notify=None):
        with output_lock(target, notify=None):  # the same process: no self-deadlock
            pass
        proc = subprocess.run([sys.executable, "-c", "import sys; from emotk.locks import output_lock\n"
                               "with output_lock(sys.argv[1], timeout=0):\n    pass", str(target)],
                              capture_output=True, text=True, env=env())
        assert proc.returncode != 0 and f"pid {os.getpid()}" in proc.stderr
    with output_lock(target, timeout=0, notify=None):  # released
        pass


# --- 7. a garbage manifest, a workspace that is a file -------------------------------------------------

def test_workspace_that_is_a_file(tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("hello")
    with pytest.raises(WorkspaceError, match="is a file, not a folder"):
        Workspace.open(f)
    proc = emotk("split", "--official", "-w", str(f), check=False)
    assert "is a file, not a folder" in _clean_error(proc)


def test_garbage_manifest_and_dataset_json(small, tmp_path):
    ws = _copy(small.root, tmp_path / "ws")
    ws.manifest_path("affwild2").write_bytes(b"this is not parquet")
    before = _tree_hashes(ws.root)
    with pytest.raises(WorkspaceError, match="manifest .* is not a readable parquet file.*emotk prepare"):
        ws.read_manifest("affwild2")
    proc = emotk("split", "--official", workspace=ws.root, check=False)
    assert "manifest.parquet" in _clean_error(proc) and "emotk prepare affwild2" in proc.stderr
    proc = emotk(*CLI_EXTRACT, workspace=ws.root, check=False)
    assert "manifest.parquet" in _clean_error(proc)
    assert _tree_hashes(ws.root) == before
    pl.DataFrame({"sample_id": ["a"]}).write_parquet(ws.manifest_path("affwild2"))  # parquet, not a manifest
    with pytest.raises(WorkspaceError, match="lacks columns"):
        ws.read_manifest("affwild2")
    ws.info_path("affwild2").write_text("{not json")
    with pytest.raises(WorkspaceError, match="dataset.json is not valid JSON"):
        ws.read_info("affwild2")


def test_garbage_anywhere_in_a_cache_never_reads_as_features(ready, tmp_path):
    """Bytes flipped at random places, in the arrays and in HDF5's own metadata: every sample either
    reads back exactly as written or is a FeatureStoreError — never other values, another exception
    or a crash. (With the pre-1.10 file format, whose metadata has no checksums, flips in the
    metadata crashed the process.)"""
    cache = ready.feature_path("affwild2", "regnet_y_400mf")
    original = store_arrays(cache)
    data = []
    with h5py.File(cache, "r") as f:
        f.visititems(lambda name, obj: data.append((obj.id.get_offset(), obj.id.get_storage_size()))
                     if isinstance(obj, h5py.Dataset) else None)
    in_data = np.zeros(cache.stat().st_size, bool)
    for start, n in data:
        in_data[start:start + n] = True
    rng = np.random.default_rng(7)
    offsets = [*rng.choice(np.flatnonzero(in_data[:-4]), 20), *rng.choice(np.flatnonzero(~in_data[:-4]), 100)]
    outcomes = set()
    for k, offset in enumerate(offsets):
        copy = tmp_path / f"c{k}.h5"
        shutil.copyfile(cache, copy)
        _flip(copy, int(offset), 2)
        try:
            store = FeatureStore(copy)
        except FeatureStoreError:
            outcomes.add("file refused")
            continue
        with store:
            for sid in original:
                try:
                    feats, mask = store.read(sid)
                except FeatureStoreError:
                    outcomes.add("sample refused")
                    continue
                assert np.array_equal(feats, original[sid][0]) and np.array_equal(mask, original[sid][1]), (offset, sid)
                outcomes.add("intact")
        copy.unlink()
    assert outcomes == {"file refused", "sample refused", "intact"}


def test_hdf5_written_on_a_full_disk_is_a_clean_error(small_disk, tmp_path):
    """h5py writing straight into a file on a full disk can crash the process (exit 139); write_hdf5
    builds the file in memory and writes its bytes like any other file."""
    from emotk.atomic import write_hdf5

    disk = small_disk(64 * 1024)
    target = disk / "labels.h5"
    write_hdf5(target, lambda f: f.create_dataset("a", data=np.arange(10)))
    with pytest.raises(DiskFullError, match="the frame labels"):
        write_hdf5(target, lambda f: [f.create_dataset(str(i), data=np.zeros(1000, np.float32)) for i in range(50)],
                   what="the frame labels")
    with h5py.File(target, "r") as f:  # the previous file, whole
        assert np.array_equal(f["a"][()], np.arange(10))
    assert [p.name for p in disk.iterdir()] == ["labels.h5"]
