"""Issue 14 (training memory): FrameSource reads the feature cache without a second copy in memory.

Samples stored as one plain float16 block stay in their file (read per window); chunked, compressed
or float32 stores fall back to one in-memory float16 block. Every layout must give exactly what the
test wrote (float32 rounded to float16 as ``astype``) and what the store's own per-sample read gives,
and damaged bytes must still be refused at load.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emotk.errors import EmotkError
from emotk.features.store import MASK, FeatureStore, FeatureWriter, parts_dir, sample_digest
from emotk.train.data import IN_MEMORY, FrameSource
from emotk.workspace import Workspace

DIM = 6
LENGTHS = {"a": 37, "b": 5, "c": 64, "d": 1}


def _samples(dtype, seed=0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for sid, n in LENGTHS.items():
        feats = (rng.standard_normal((n, DIM)) * 3).astype(dtype)
        mask = rng.random(n) > 0.2
        out[sid] = (feats, mask)
    return out


def _ws(tmp_path) -> tuple[Workspace, object]:
    ws = Workspace.open(tmp_path / "ws")
    ws.ensure()
    path = ws.feature_path("affwild2", "x")
    path.parent.mkdir(parents=True, exist_ok=True)
    return ws, path


def _frame_sets(n: int) -> list[np.ndarray]:
    """Windows as the builders make them: runs, strided runs, edge-padded runs, uniform picks, one frame (and a reversed run)."""
    sets = [np.arange(n), np.arange(0, n, 3), np.minimum(np.arange(8) + max(n - 3, 0), n - 1),
            np.linspace(0, n - 1, 7).round().astype(int), np.array([n - 1]), np.arange(n)[::-1]]
    return [f for f in sets if len(f)]


def _check(src: FrameSource, ws: Workspace, path, written: dict) -> None:
    ids = list(written)
    with FeatureStore(path) as store:
        for s, sid in enumerate(ids):
            feats, mask = written[sid]
            read, read_mask = store.read(sid)
            assert np.array_equal(src.masks[s], mask) and np.array_equal(src.masks[s], read_mask)
            for frames in _frame_sets(len(feats)):
                x, ok = src.take(s, frames)
                want = torch.from_numpy(feats.astype(np.float16)[frames].astype(np.float32))
                assert x.dtype == torch.float32 and ok.all() and len(ok) == len(frames)
                assert torch.equal(x, want), (sid, frames)
                assert torch.equal(x, torch.from_numpy(np.asarray(read, np.float16)[frames].astype(np.float32)))
    assert src.shape == (DIM,)


def test_contiguous_store_stays_in_its_file(tmp_path):
    ws, path = _ws(tmp_path)
    written = _samples(np.float16)
    _write_store(path, written)
    assert path.exists() and not parts_dir(path).exists()
    src = FrameSource(ws, "affwild2", "x", list(written))
    assert (src._file != IN_MEMORY).all() and src._block.nbytes == 0  # nothing of the cache held in memory
    _check(src, ws, path, written)
    # a copy for spawned DataLoader workers reopens the file and reads the same
    clone = pickle.loads(pickle.dumps(src))
    assert torch.equal(clone.take(2, np.arange(10, 50))[0], src.take(2, np.arange(10, 50))[0])
    src.close()
    assert torch.equal(src.take(0, np.arange(5))[0], clone.take(0, np.arange(5))[0])  # reopened when closed


def test_sharded_parts_newest_copy_wins(tmp_path):
    ws, path = _ws(tmp_path)
    old = _samples(np.float16, seed=1)
    _write_store(path, old)  # a merged file ...
    written = _samples(np.float16, seed=2)
    w = FeatureWriter(path, {"encoder": "x"}, flush_frames=1)  # ... then one part file per sample
    for sid in ("c", "a"):
        w.add(sid, *written[sid])
    written = {sid: written[sid] if sid in ("a", "c") else old[sid] for sid in LENGTHS}
    assert len(list(parts_dir(path).glob("part-*.h5"))) == 2
    src = FrameSource(ws, "affwild2", "x", list(written))
    assert len(src._paths) == 3 and src._block.nbytes == 0
    _check(src, ws, path, written)


def _write_store(path, samples: dict) -> None:
    """A store written by emotk's FeatureWriter (merged into one contiguous file)."""
    w = FeatureWriter(path, {"encoder": "x"})
    for sid, (feats, mask) in samples.items():
        w.add(sid, feats, mask)
    w.finalize()


def _write_h5py(path, samples: dict, **dataset_options) -> None:
    """A store as another writer could make it (chunked/compressed), with emotk's attributes and checksums."""
    with h5py.File(path, "w") as f:
        f.attrs["encoder"] = "x"
        f.attrs["store_format"] = 2
        masks = f.create_group(MASK)
        for sid, (feats, mask) in samples.items():
            ds = f.create_dataset(sid, data=feats, **dataset_options)
            masks.create_dataset(sid, data=mask)
            ds.attrs["sha256"] = sample_digest(feats, mask)


def test_chunked_compressed_store_is_one_block_in_memory(tmp_path):
    ws, path = _ws(tmp_path)
    written = _samples(np.float16, seed=3)
    _write_h5py(path, written, chunks=True, compression="gzip", shuffle=True)
    src = FrameSource(ws, "affwild2", "x", list(written))
    assert (src._file == IN_MEMORY).all() and not src._paths
    assert src._block.dtype == np.float16 and src._block.size == sum(n * DIM for n in LENGTHS.values())
    _check(src, ws, path, written)


def test_float32_store_is_rounded_to_float16_in_one_block(tmp_path):
    ws, path = _ws(tmp_path)
    written = _samples(np.float32, seed=4)
    _write_store(path, written)
    src = FrameSource(ws, "affwild2", "x", list(written))
    assert (src._file == IN_MEMORY).all() and src._block.size == sum(n * DIM for n in LENGTHS.values())
    _check(src, ws, path, written)


@pytest.mark.parametrize("layout", ["contiguous", "chunked"])
def test_damaged_bytes_are_refused_at_load(tmp_path, layout):
    ws, path = _ws(tmp_path)
    written = _samples(np.float16, seed=5)
    if layout == "contiguous":
        _write_store(path, written)
        with h5py.File(path, "r") as f:
            offset = f["c"].id.get_offset()
        with open(path, "r+b") as fh:  # flip one byte inside sample c's features
            fh.seek(offset + 100)
            byte = fh.read(1)
            fh.seek(offset + 100)
            fh.write(bytes([byte[0] ^ 0x40]))
    else:
        bad = dict(written)
        bad["c"] = (written["c"][0] + np.float16(1), written["c"][1])
        _write_h5py(path, bad, chunks=True)
        with h5py.File(path, "r+") as f:  # the checksum of the true data, the bytes of another
            f["c"].attrs["sha256"] = sample_digest(*written["c"])
    with pytest.raises(EmotkError, match="sample 'c' is damaged"):
        FrameSource(ws, "affwild2", "x", list(written))


def test_replaced_cache_is_a_clear_error_not_other_features(tmp_path):
    ws, path = _ws(tmp_path)
    written = _samples(np.float16, seed=6)
    _write_store(path, written)
    src = FrameSource(ws, "affwild2", "x", list(written))
    state = pickle.dumps(src)
    other = path.with_name("other.h5")
    _write_store(other, _samples(np.float16, seed=7))
    other.replace(path)  # an extract merging while training runs
    assert torch.equal(src.take(0, np.arange(4))[0],  # the open file is still the one verified
                       torch.from_numpy(written["a"][0][:4].astype(np.float32)))
    with pytest.raises(EmotkError, match="replaced while training"):
        pickle.loads(state)


def test_dataloader_workers_read_the_same_batches(tmp_path):
    ws, path = _ws(tmp_path)
    written = _samples(np.float16, seed=8)
    _write_store(path, written)
    src = FrameSource(ws, "affwild2", "x", list(written))
    items = [(s, np.arange(i, i + 4)) for s, n in enumerate(LENGTHS.values()) for i in range(0, n - 4, 7)]

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return src.take(*items[i])[0]

    alone = torch.stack([src.take(*it)[0] for it in items])
    workers = torch.cat(list(DataLoader(Items(), batch_size=3, num_workers=2)))
    assert torch.equal(alone, workers)
