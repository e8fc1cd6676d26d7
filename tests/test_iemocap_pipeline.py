"""IEMOCAP end to end through the CLI, as a user types it: prepare (speech from espeak-ng, split-screen
AVI cut per utterance and speaker half) → extract (librosa MFCC, openSMILE eGeMAPS, GloVe, a frame
encoder over the crops) → split (leave-one-session-out; random utterance folds flagged) → train the
self- and cross-attention models (tri- and bi-modal) → report.
"""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from iemocap_factory import make_iemocap
from procs import emotk
from speech_factory import have_espeak

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed (apt-get install -y espeak-ng)")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iemocap-e2e")
    mini = make_iemocap(tmp / "raw", sessions=2, dialogs=2, utts=4)
    root = tmp / "ws"
    out = emotk("prepare", "iemocap", "--root", str(mini.base), "-o", "fps=3", "--quiet", workspace=root).stdout
    assert "per class:" in out and "outside map:" in out  # the prepare summary
    for args in (["--audio", "mfcc"], ["--audio", "egemaps", "--level", "functionals", "--workers", "2"],
                 ["--text", "glove"],
                 ["--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "32", "--name", "video"]):
        emotk("extract", *args, "--quiet", workspace=root)
    emotk("split", "--by", "session", "--folds", "2", workspace=root)
    return root


def test_features_have_the_shapes_the_models_read(ws):
    import h5py

    with h5py.File(ws / "iemocap" / "features" / "mfcc.h5") as f:
        attrs = dict(f.attrs)
    assert "mfcc" in json.dumps({k: str(v) for k, v in attrs.items()})  # provenance names the extractor
    from emotk.features.store import FeatureStore

    manifest = pl.read_parquet(ws / "iemocap" / "manifest.parquet")
    sid = manifest["sample_id"][0]
    with FeatureStore(ws / "iemocap" / "features" / "mfcc.h5") as s:
        x, _ = s.read(sid)
        assert x.ndim == 2 and x.shape[1] == 120  # 40 MFCC + Δ + ΔΔ, Rajan's 120-d audio frames
    with FeatureStore(ws / "iemocap" / "features" / "egemaps_functionals.h5") as s:
        assert s.read(sid)[0].shape == (88,)  # eGeMAPSv02 functionals
    with FeatureStore(ws / "iemocap" / "features" / "glove.h5") as s:
        tokens, mask = s.read(sid)
        # words and punctuation marks are GloVe tokens; the miniature speaks plain English: none is OOV
        n_tokens = len(re.findall(r"[A-Za-z']+|[?!.,;:]", manifest["text"][0]))
        assert tokens.shape == (n_tokens, 50) and mask.all()


def test_session_folds_train_and_report(ws):
    emotk("split", "--check", "session-k2", workspace=ws)
    runs = ws / "runs"
    common = ["--split", "session-k2", "--epochs", "1", "--batch-size", "4", "--quiet", "--runs", str(runs)]
    emotk("train", "self_attn", "--input", "text=glove", "--input", "audio=mfcc", "--input", "video=video", *common,
          workspace=ws)
    emotk("train", "cross_attn", "--input", "text=glove", "--input", "audio=mfcc", *common, workspace=ws)
    table = emotk("report", str(runs), "--metric", "ua", workspace=ws).stdout
    rows = [line for line in table.splitlines() if line.startswith("| ") and "_attn" in line]
    assert len(rows) == 2 and "selfcross" in rows[0], table
    assert "text=glove audio=mfcc video=video" in table and "text=glove audio=mfcc |" in table
    assert "mean per-class recall" in table and '"UWA"' in table  # the metric naming is spelled out
    # the UA of every run equals the mean per-class recall recomputed from its predictions
    for metrics_path in runs.rglob("metrics.json"):
        run = metrics_path.parent
        result = json.loads(metrics_path.read_text())
        config = json.loads((run / "config.json").read_text())
        assert config["protocol_resolved"]["lengths"] == {"text": 128, "audio": 1000, "video": 32}
        pred = pl.read_parquet(run / "predictions.parquet")
        true, guess = pred["true"].to_numpy(), pred["pred"].to_numpy()
        recalls = [float(np.mean(guess[true == c] == c)) for c in np.unique(true)]
        assert result["metrics"]["ua"] == pytest.approx(sum(recalls) / len(recalls))
        assert result["metrics"]["wa"] == pytest.approx(float(np.mean(true == guess)))
        manifest = pl.read_parquet(ws / "iemocap" / "manifest.parquet")
        sessions = set(manifest.filter(pl.col("sample_id").is_in(pred["sample_id"].to_list()))["session"].to_list())
        assert len(sessions) == 1, sessions  # the reported part is one whole session


def test_random_utterance_folds_are_flagged(ws):
    out = emotk("split", "--by", "random", "--folds", "2", workspace=ws).stdout
    assert "leak subjects by design" in out
    check = emotk("split", "--check", "random-k2", workspace=ws, check=False)
    assert check.returncode == 2 and "leaks" in check.stderr + check.stdout
    refused = emotk("train", "self_attn", "--input", "text=glove", "--split", "random-k2", "--epochs", "1", "--quiet",
                    workspace=ws, check=False)
    assert refused.returncode == 2 and "--allow-leak" in refused.stderr + refused.stdout


def test_an_utterance_missing_from_a_stream_is_left_out_and_counted(ws, tmp_path):
    """Extraction skips what it cannot use (silent audio, an empty transcript) and lists it in failures.csv:
    a run over that stream leaves such an utterance out, counts it and says so, instead of refusing the split."""
    import shutil

    import h5py

    features = ws / "iemocap" / "features"
    shutil.copy(features / "glove.h5", features / "glove_gap.h5")
    split = pl.read_parquet(ws / "iemocap" / "splits" / "session-k2.parquet")
    gone = split.filter(pl.col("fold") == 0)["sample_id"][0]
    with h5py.File(features / "glove_gap.h5", "a") as f:  # as if extraction had listed it as a failure
        del f[gone]
        del f["mask"][gone]
    runs = tmp_path / "runs"
    proc = emotk("train", "self_attn", "--input", "text=glove_gap", "--input", "audio=mfcc", "--split", "session-k2",
                 "--fold", "0", "--epochs", "1", "--quiet", "--runs", str(runs), workspace=ws)
    assert "are not scored" in proc.stderr and repr(gone) in proc.stderr
    result = json.loads(next(runs.rglob("metrics.json")).read_text())
    assert result["status"] == "finished" and result["left_out"] == 1
    pred = pl.read_parquet(next(runs.rglob("predictions.parquet")))
    assert gone not in pred["sample_id"].to_list()
