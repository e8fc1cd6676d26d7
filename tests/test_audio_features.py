"""Audio features per utterance (emotk.features.audio / utterances) on real espeak-ng speech, real
soundfile, soxr, openSMILE and librosa. Expected values come from the libraries called directly on
signals this test reads and resamples itself, from frame-count formulas, and from an uninterrupted run."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import soxr

from emotk.atomic import write_json, write_parquet
from emotk.errors import FeatureStoreError
from emotk.features import audio as A
from emotk.features.store import FeatureStore
from emotk.features.utterances import extract_audio
from emotk.workspace import Workspace, validate_manifest
from tests import speech_factory as sp
from tests.procs import assert_same_store, env, store_arrays

pytestmark = pytest.mark.skipif(not sp.have_espeak(), reason="espeak-ng not installed")

DS = "utts"
GOOD = ["mono", "dialog_b", "mono48", "mixed"]  # utterances that give features
BAD = {  # sample id → words the failure reason must contain
    "silent": "silent", "empty": "empty", "trunc": "truncated", "notaudio": "cannot be decoded",
    "nochan": "channel 3", "outside": "outside the file", "missing": "not found", "noaudio": "no audio",
}


def make_workspace(root: Path, rows: list[dict]) -> Workspace:
    """A workspace holding one utterance dataset: manifest (utterance contract) + dataset.json (raw_root)."""
    ws = Workspace.open(root / "ws")
    ws.ensure()
    full = [{"subject": r.get("subject", "spk1"), "split": None, "kind": "utterance", "media": r.get("audio"),
             "media_root": "raw", "media_kind": "audio", "frame_base": 0, "n_frames": 0, "fps": None,
             "audio_start": None, "audio_end": None, "audio_channel": None, "text": "", **r} for r in rows]
    frame = pl.DataFrame(full, schema_overrides={"audio_start": pl.Float64, "audio_end": pl.Float64,
                                                 "audio_channel": pl.Int64, "fps": pl.Float64, "split": pl.Utf8,
                                                 "audio": pl.Utf8, "media": pl.Utf8})
    ws.dataset_dir(DS).mkdir(parents=True, exist_ok=True)
    write_parquet(ws.manifest_path(DS), validate_manifest(frame))
    write_json(ws.info_path(DS), {"raw_root": str(root / "raw"), "options": {}})
    return ws


@pytest.fixture(scope="session")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    raw = root / "raw"
    sp.write_speech(raw / "mono.wav", "hello there, how are you today")
    spans = sp.write_dialog(raw / "dialog.wav", [("good morning to you", "en", 0), ("I am angry about this", "en+f3", 1)])
    y16 = sp.speech("the quick brown fox jumps over the lazy dog")
    sf.write(raw / "orig16.wav", y16, 16000, subtype="FLOAT")
    sf.write(raw / "up48.wav", soxr.resample(y16, 16000, 48000, quality="HQ"), 48000, subtype="FLOAT")
    sp.write_speech(raw / "stereo.wav", "both channels averaged", channels=2)
    sp.write_silence(raw / "silent.wav")
    sp.write_empty_wav(raw / "empty.wav")
    sp.write_truncated_wav(raw / "trunc.wav")
    sp.write_not_audio(raw / "notaudio.wav")
    rows = [
        {"sample_id": "mono", "audio": "mono.wav"},
        {"sample_id": "dialog_b", "audio": "dialog.wav", "audio_start": spans[1][0], "audio_end": spans[1][1],
         "audio_channel": 1},
        {"sample_id": "mono48", "audio": "up48.wav"},
        {"sample_id": "mixed", "audio": "stereo.wav"},
        {"sample_id": "silent", "audio": "silent.wav"},
        {"sample_id": "empty", "audio": "empty.wav"},
        {"sample_id": "trunc", "audio": "trunc.wav"},
        {"sample_id": "notaudio", "audio": "notaudio.wav"},
        {"sample_id": "nochan", "audio": "dialog.wav", "audio_channel": 3},
        {"sample_id": "outside", "audio": "mono.wav", "audio_start": 30.0, "audio_end": 31.0},
        {"sample_id": "missing", "audio": "gone.wav"},
        {"sample_id": "noaudio", "audio": None},
    ]
    ws = make_workspace(root, rows)
    return {"ws": ws, "raw": raw, "spans": spans, "rows": {r["sample_id"]: r for r in rows}}


def signal16(mini, sid) -> np.ndarray:
    """The utterance's 16 kHz mono signal, read with soundfile and resampled with soxr here (not by emotk)."""
    r = mini["rows"][sid]
    y, sr = sf.read(mini["raw"] / r["audio"], dtype="float32", always_2d=True)
    if r.get("audio_start") is not None:
        y = y[int(round(r["audio_start"] * sr)):int(round(r["audio_end"] * sr))]
    y = y[:, r["audio_channel"]] if r.get("audio_channel") is not None else y.mean(axis=1)
    return soxr.resample(y, sr, 16000, quality="HQ").astype(np.float32) if sr != 16000 else y


@pytest.fixture(scope="session")
def egemaps_functionals(mini):
    summary = extract_audio(mini["ws"], DS, "egemaps", level="functionals", workers=1, progress=False)
    return summary


def test_span_equals_soundfile_slice(mini):
    a, b = mini["spans"][1]
    y, sr = A.read_span(mini["raw"] / "dialog.wav", a, b, 1)
    ref, ref_sr = sf.read(mini["raw"] / "dialog.wav", dtype="float32")
    assert sr == ref_sr == 16000
    assert np.array_equal(y, ref[int(round(a * sr)):int(round(b * sr)), 1])
    with pytest.raises(A.AudioSampleError, match="silent"):  # the other speaker's channel is silent there
        A.read_span(mini["raw"] / "dialog.wav", a, b, 0)


def test_egemaps_functionals_equal_opensmile(mini, egemaps_functionals):
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    assert egemaps_functionals.done == len(GOOD)
    with FeatureStore(mini["ws"].feature_path(DS, "egemaps_functionals")) as store:
        assert sorted(store.keys()) == sorted(GOOD)
        assert store.attrs["extractor"] == "audio" and store.attrs["dim"] == 88 and store.attrs["sample_rate"] == 16000
        for sid in GOOD:
            feats, mask = store.read(sid)
            want = smile.process_signal(signal16(mini, sid), 16000).to_numpy(np.float32)[0]
            assert feats.shape == (88,) and mask.tolist() == [True]
            np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)


def test_bad_files_are_listed_with_reasons_never_stored(mini, egemaps_functionals):
    failed = {f["sample_id"]: f["reason"] for f in egemaps_functionals.failures}
    assert sorted(failed) == sorted(BAD)
    for sid, words in BAD.items():
        assert words in failed[sid], (sid, failed[sid])
    with open(mini["ws"].failures_path(DS), newline="") as fh:
        listed = {r["sample_id"] for r in csv.DictReader(fh) if r["stage"] == "extract-audio"}
    assert set(BAD) <= listed
    text = "\n".join(egemaps_functionals.lines())
    assert f"{len(GOOD)} extracted" in text and f"{len(BAD)} skipped" in text and "48000 Hz × 1" in text


def test_rerun_does_only_missing_and_refuses_other_options(mini, egemaps_functionals):
    again = extract_audio(mini["ws"], DS, "egemaps", level="functionals", workers=1, progress=False)
    assert again.done == 0 and again.skipped_existing == len(GOOD)
    extract_audio(mini["ws"], DS, "mfcc", workers=1, progress=False, name="mfcc_opts", n_mfcc=13)
    with pytest.raises(FeatureStoreError, match="other settings"):
        extract_audio(mini["ws"], DS, "mfcc", workers=1, progress=False, name="mfcc_opts", n_mfcc=20)
    with pytest.raises(FeatureStoreError, match="unknown option"):
        extract_audio(mini["ws"], DS, "mfcc", workers=1, progress=False, n_mfccs=20)


def test_mfcc_frames_follow_the_formula_and_48k_matches_16k(mini):
    extract_audio(mini["ws"], DS, "mfcc", workers=1, progress=False)
    with FeatureStore(mini["ws"].feature_path(DS, "mfcc")) as store:
        for sid in GOOD:
            feats, mask = store.read(sid)
            n = len(signal16(mini, sid))
            assert feats.shape == (1 + n // 160, 120) and mask.all()
        up, _ = store.read("mono48")
    orig = A.compute(sf.read(mini["raw"] / "orig16.wav", dtype="float32")[0], A.settings("mfcc"))
    assert up.shape == orig.shape
    assert np.abs(up - orig).max() < 0.01 * np.abs(orig).max()


def test_mfcc_static_part_equals_librosa(mini):
    import librosa

    y = signal16(mini, "mono")
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=160, win_length=400, n_mels=64,
                                         fmin=0.0, fmax=8000.0)
    want = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=40).T
    got = A.compute(y, A.settings("mfcc"))
    np.testing.assert_allclose(got[:, :40], want, rtol=1e-5, atol=1e-4)
    logmel = A.compute(y, A.settings("logmel", n_mels=80))
    np.testing.assert_allclose(logmel, np.log(librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=512, hop_length=160, win_length=400, n_mels=80, fmin=0.0, fmax=8000.0) + 1e-6).T,
        rtol=1e-5, atol=1e-5)


# --- parallel and resumed runs on a few dozen utterances ----------------------------------------------

@pytest.fixture(scope="session")
def many(mini, tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    raw = root / "raw"
    raw.mkdir()
    for name in ("mono.wav", "dialog.wav", "up48.wav"):
        os.link(mini["raw"] / name, raw / name)
    rows = []
    for i in range(8):  # sliding half-second windows over the three files
        for name in ("mono.wav", "dialog.wav", "up48.wav"):
            rows.append({"sample_id": f"{name[:-4]}_{i}", "audio": name, "audio_start": 0.1 * i,
                         "audio_end": 0.1 * i + 0.5, "audio_channel": 0 if name == "dialog.wav" else None})
    ws = make_workspace(root, rows)
    extract_audio(ws, DS, "egemaps", workers=1, progress=False)  # the uninterrupted serial run
    return ws


def test_parallel_store_equals_serial(many):
    s = extract_audio(many, DS, "egemaps", workers=2, progress=False, name="egemaps_par")
    assert s.done == 24 and not s.failures
    assert_same_store(store_arrays(many.feature_path(DS, "egemaps")), store_arrays(many.feature_path(DS, "egemaps_par")))


RUN = """import sys
from emotk.workspace import Workspace
from emotk.features.utterances import extract_audio
extract_audio(Workspace.open(sys.argv[1]), "utts", "egemaps", workers=1, progress=False, flush_frames=1, name="killed")
"""


def test_killed_then_rerun_equals_uninterrupted(many):
    parts = many.features_dir(DS) / "killed.parts"
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(many.root)], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    t0 = time.time()
    while not any(parts.glob("part-*.h5")) and proc.poll() is None and time.time() - t0 < 120:
        time.sleep(0.002)
    assert proc.poll() is None, f"the extraction ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not many.feature_path(DS, "killed").exists()
    again = extract_audio(many, DS, "egemaps", workers=1, progress=False, name="killed")
    assert 0 < again.done < 24 and again.skipped_existing == 24 - again.done
    assert_same_store(store_arrays(many.feature_path(DS, "egemaps")), store_arrays(many.feature_path(DS, "killed")))
