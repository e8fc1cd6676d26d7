"""Every stage through the real command line on the miniature Aff-Wild2: prepare → extract → split → train → report."""

import json

import h5py
import numpy as np
import torch
import polars as pl
import pytest

from emotk.errors import FeatureStoreError
from emotk.features.store import FeatureStore, FeatureWriter, parts_dir
from tests.conftest import MINI_TRACKS, run_cli
from tests.procs import find_run


@pytest.fixture(scope="module")
def ws(mini_affwild2, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    run_cli("prepare", "affwild2", "--root", str(mini_affwild2), workspace=ws)
    run_cli("extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "64",
            "--batch-size", "32", "--num-workers", "1", "--quiet", workspace=ws)
    return ws


def test_feature_store_contract(ws):
    path = ws / "affwild2/features/regnet_y_400mf.h5"
    assert path.exists() and not parts_dir(path).exists()  # merged at the end
    labels = h5py.File(ws / "affwild2/labels.h5")
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(MINI_TRACKS)
        assert store.attrs["encoder"] == "regnet_y_400mf" and store.attrs["weights"] == "none"
        assert store.attrs["dim"] == 440 and store.attrs["image_size"] == 64 and "emotk_version" in store.attrs
        feats, mask = store.read("102")
        assert feats.dtype == np.float16 and feats.shape == (labels["102"].shape[0], 440)
        assert mask.sum() == 42 and (~mask).sum() == 3  # 2 missing crops + the extra label line
        assert np.isfinite(feats.astype(np.float32)).all() and np.abs(feats[mask]).sum(1).min() > 0


def test_rerun_extract_does_only_missing(ws):
    out = run_cli("extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "64", "--quiet", workspace=ws)
    assert "0 extracted, 7 already there" in out.stdout


def test_extract_refuses_other_options(ws):
    out = run_cli("extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "96", "--quiet",
                  workspace=ws, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "image_size" in out.stderr and "--name" in out.stderr


def test_store_reads_parts_and_ignores_temporaries(tmp_path):
    path = tmp_path / "f.h5"
    w = FeatureWriter(path, {"encoder": "x"}, flush_frames=1)
    w.add("a", np.ones((3, 4), np.float16))
    w.add("b", np.zeros((2, 4), np.float16), np.array([True, False]))
    (parts_dir(path) / ".part-r0-dead.h5.tmp.h5").write_bytes(b"half written")  # a killed write
    with FeatureStore(path) as store:
        assert store.keys() == ["a", "b"]
        assert store.read("b")[1].tolist() == [True, False]
    w2 = FeatureWriter(path, {"encoder": "x"})  # a restart cleans temporaries and sees what is done
    assert w2.done_ids() == {"a", "b"} and not list(parts_dir(path).glob(".*"))
    w2.finalize()
    assert path.exists() and FeatureStore(path).keys() == ["a", "b"]
    with pytest.raises(FeatureStoreError, match="encoder"):
        FeatureWriter(path, {"encoder": "y"})
    with pytest.raises(FeatureStoreError, match="NaN"):
        w2.add("c", np.full((2, 4), np.nan, np.float32))


def test_split_subject_folds_and_check(ws):
    run_cli("split", "--by", "subject", "--folds", "3", "--pool", "train", workspace=ws)
    frame = pl.read_parquet(ws / "affwild2/splits/subject-k3-train.parquet")
    assert frame.group_by("subject").agg(pl.col("fold").n_unique())["fold"].max() == 1
    assert set(frame["fold"]) == {0, 1, 2}
    assert frame.filter(pl.col("sample_id").str.starts_with("122-"))["fold"].n_unique() == 1
    out = run_cli("split", "--check", "subject-k3-train", workspace=ws)
    assert "no subject in two parts" in out.stdout
    leaky = frame.with_columns(pl.when(pl.col("sample_id") == "122-60-1920x1080-2").then((pl.col("fold") + 1) % 3)
                               .otherwise(pl.col("fold")).alias("fold"))
    leaky.write_parquet(ws / "affwild2/splits/leaky.parquet")
    out = run_cli("split", "--check", "leaky", workspace=ws, check=False)
    assert out.returncode == 2 and "122-60-1920x1080" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("train", "gru", "--split", "leaky", "--epochs", "1", workspace=ws, check=False)
    assert out.returncode == 2 and "--allow-leak" in out.stderr
    (ws / "affwild2/splits/leaky.parquet").unlink()


def test_train_and_report(ws):
    run_cli("split", "--official", workspace=ws)
    args = ["train", "gru", "--split", "official", "--epochs", "2", "--seq-len", "16", "--quiet",
            "-o", "hidden=32", "-o", "layers=1"]
    out = run_cli(*args, "--seeds", "1,2", workspace=ws)
    assert "official seed 2: ccc" in out.stdout
    run = find_run(ws / "runs", "gru-sm", "official", "official-seed1")
    for name in ("config.json", "checkpoint.pt", "best.pt", "history.csv", "metrics.json", "predictions.parquet"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model_options"] == {"hidden": 32, "layers": 1} and config["protocol_resolved"]["stages"][0]["optimizer"]["lr"] == 1e-3
    assert len(config["fingerprints"]["features:regnet_y_400mf"]) == 64 and config["versions"]["torch"]
    preds = pl.read_parquet(run / "predictions.parquet")
    assert set(preds["sample_id"]) == {"video45_1", "24-30-640x360"}
    assert preds["pred_valence"].abs().max() <= 1.0  # tanh head
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished"

    def ccc(t, p):  # Lin's CCC written out (population moments), independent of emotk.metrics
        return 2 * np.mean((t - t.mean()) * (p - p.mean())) / (t.var() + p.var() + (t.mean() - p.mean()) ** 2)

    by_hand = np.mean([ccc(preds[f"true_{k}"].to_numpy(), preds[f"pred_{k}"].to_numpy()) for k in ("valence", "arousal")])
    assert metrics["metrics"]["ccc"] == pytest.approx(by_hand, abs=1e-6)  # the reported number is the predictions' CCC
    assert len(pl.read_csv(run / "history.csv")) == 2
    again = run_cli(*args, "--seeds", "1", workspace=ws)  # finished runs are not redone
    assert f"{metrics['metrics']['ccc']:.4f}" in again.stdout

    assert "ccc ↑" in run_cli("report", workspace=ws).stdout  # the runs' primary metric by default
    table = run_cli("report", "--metric", "ccc", workspace=ws).stdout
    assert "gru" in table and "| 2 |" in table  # two seeds aggregated
    latex = run_cli("report", "--metric", "ccc", "--format", "latex", "--plot", str(ws / "plots"), workspace=ws).stdout
    assert "\\begin{tabular}" in latex and len(list((ws / "plots").glob("*.png"))) == 2

    scored = run_cli("evaluate", str(run), workspace=ws).stdout
    assert f"{metrics['metrics']['ccc']:.4f}" in scored


def test_train_kfold_all_folds(ws):
    run_cli("train", "gru", "--split", "subject-k3-train", "--fold", "all", "--epochs", "1", "--seq-len", "16",
            "--quiet", "-o", "hidden=16", "-o", "layers=1", workspace=ws)
    runs = sorted(p.name for p in find_run(ws / "runs", "gru-sm", "subject-k3-train").iterdir())
    assert runs == ["fold0-seed1", "fold1-seed1", "fold2-seed1"]


def test_extract_fps_subsampling(ws):
    run_cli("extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "32", "--fps", "15",
            "--name", "r400-15fps", "--quiet", workspace=ws)
    with FeatureStore(ws / "affwild2/features/r400-15fps.h5") as store:
        assert store.attrs["fps"] == 15.0
        _, mask = store.read("10-60-1280x720_left")  # 60 fps → every 4th frame
        assert set(np.flatnonzero(mask) % 4) == {0}
        _, mask = store.read("102")  # no fps in the name: all frames, and a note
        assert mask.sum() > 30
    failures = (ws / "affwild2/failures.csv").read_text()
    assert "102,extract-fps" in failures


def test_extract_decoding_on_the_device_equals_the_workers(ws, tmp_path):
    """--decode device (JPEGs decoded batched by torchvision on the encoder's device; nvJPEG on CUDA) gives
    the features the PIL workers give (here on the CPU: both are libjpeg-turbo), and is recorded."""
    run_cli("extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "32", "--decode", "device",
            "--name", "r400-dev", "--quiet", workspace=ws)
    run_cli("extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "32",
            "--name", "r400-pil", "--quiet", workspace=ws)
    with FeatureStore(ws / "affwild2/features/r400-dev.h5") as dev, FeatureStore(ws / "affwild2/features/r400-pil.h5") as pil:
        assert dev.attrs["decode"] == "device:cpu" and "decode" not in pil.attrs
        assert sorted(dev.keys()) == sorted(pil.keys())
        for sid in pil.keys():
            (a, ma), (b, mb) = dev.read(sid), pil.read(sid)
            assert np.array_equal(ma, mb)
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)


def test_device_decoding_masks_what_it_cannot_decode():
    import io

    from PIL import Image

    from emotk.features.extract import decode_on_device

    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), 100, np.uint8)).save(buf, "JPEG")
    good = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    garbage = torch.frombuffer(bytearray(b"not a jpeg" * 10), dtype=torch.uint8)
    cut = good[: len(good) // 2].clone()  # a copy that stopped midway
    x, ok = decode_on_device([good, garbage, cut, good], torch.ones(4, dtype=torch.bool), 16, "cpu")
    assert ok.tolist() == [True, False, False, True] and x.shape == (4, 3, 16, 16)
    assert int(x[1].abs().sum()) == 0 and abs(int(x[0].float().mean()) - 100) <= 2  # masked zeros; the grey image
