"""JAFFE: the real prepare flow on a flat folder of SS.EEn.N.tiff files (grey and RGB TIFFs with a real
face, a README, misnamed files), then the image store, leave-one-subject-out vs Miskow's leaking
split, and the command line (training on the leaking split needs --allow-leak)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import run_cli
from emotk.datasets import prepare_dataset
from emotk.datasets.faceimages import write_miskow_split
from emotk.datasets.jaffe import parse_name
from emotk.errors import DatasetError
from emotk.features.images import read_image_store
from emotk.splits import check, make_split
from emotk.workspace import Workspace
from fer_factory import JAFFE_BAD, jaffe_names, make_jaffe
from test_ckplus import iou
from test_fer2013 import model_registered

# The JAFFE expression codes (datasets.md §6c) and the class ids: the codes in alphabetical order.
CODE_CLASS = {"AN": (0, "anger"), "DI": (1, "disgust"), "FE": (2, "fear"), "HA": (3, "happy"), "NE": (4, "neutral"),
              "SA": (5, "sad"), "SU": (6, "surprise")}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("jaffe-raw")
    return root, make_jaffe(root)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    root, made = raw
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    manifest, failures = prepare_dataset(ws, "jaffe", root, detector="haar", progress=False)
    return ws, manifest, failures, made


def test_names_parse_by_the_pattern_only():
    assert parse_name("KA.AN1.39.tiff") == ("KA", "AN", "1")
    assert parse_name("YM.NE.77.tif") == ("YM", "NE", "")
    assert parse_name("KA.AN1.39.jpg") == ("KA", "AN", "1")
    for bad in ("KA-AN1-39.tiff", "ka.an1.39.tiff", "KA.AN1.tiff", "KAN.AN1.39.tiff", "KA.AN1.39.tiff.bak", "README"):
        assert parse_name(bad) is None, bad


def test_manifest_subjects_and_labels(prepared):
    ws, m, _, _ = prepared
    names = jaffe_names()
    assert sorted(m["sample_id"]) == sorted(n[:-len(".tiff")] for n in names)
    for r in m.iter_rows(named=True):
        initials, code = r["sample_id"][:2], r["sample_id"][3:5]
        assert (r["subject"], r["label"], r["label_name"], r["code"]) == (initials, *CODE_CLASS[code], code)
        assert r["media"] == f"jaffe/{r['sample_id']}.tiff" and r["split"] is None and r["kind"] == "image"
    info = ws.read_info("jaffe")
    assert info["label_names"] == [c for _, c in sorted(CODE_CLASS.values())] and info["task"]["n_classes"] == 7


def test_store_and_boxes(prepared):
    ws, m, _, made = prepared
    images = read_image_store(ws.images_path("jaffe"))
    for r in m.iter_rows(named=True):
        assert images[r["sample_id"]].shape == (48, 48) and images[r["sample_id"]].dtype == np.uint8
        box = (r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"])
        assert iou(box, made["boxes"][r["sample_id"]]) > 0.5
    assert set(m.filter(m["subject"] == "KL")["source_channels"]) == {3}  # RGB TIFFs, stored grey
    assert set(m.filter(m["subject"] != "KL")["source_channels"]) == {1}


def test_misnamed_files_are_reported_not_guessed(prepared):
    ws, m, _, _ = prepared
    with open(ws.failures_path("jaffe"), newline="") as fh:
        listed = {f["file"]: f["reason"] for f in csv.DictReader(fh)}
    assert sorted(listed) == sorted(f"jaffe/{n}" for n in JAFFE_BAD)
    for name, why in JAFFE_BAD.items():
        assert why in listed[f"jaffe/{name}"]
    assert "README" not in set(m["sample_id"])


def test_loso_and_miskow_split(prepared):
    ws, m, _, _ = prepared
    _, loso = make_split(ws, "jaffe", by="subject", folds=m["subject"].n_unique())
    check(loso)
    assert sorted(len(set(loso.filter(loso["fold"] == k)["subject"])) for k in range(3)) == [1, 1, 1]  # one subject each
    assert write_miskow_split(ws, "jaffe").name == "miskow.parquet"


def test_no_jaffe_image_is_one_clear_error(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "README").write_text("nothing\n")
    with pytest.raises(DatasetError, match="SS.EEn.N.tiff"):
        prepare_dataset(Workspace.open(tmp_path / "ws"), "jaffe", tmp_path / "raw", progress=False)


def test_cli_prepare_loso_and_leaking_split_needs_allow_leak(raw, tmp_path):
    root, _ = raw
    ws = tmp_path / "ws"
    out = run_cli("prepare", "jaffe", "--root", str(root), "--detector", "haar", "--quiet", workspace=ws).stdout
    assert f"{len(jaffe_names())} samples, 3 subjects" in out and f"{len(JAFFE_BAD)} problems" in out
    run_cli("split", "--by", "subject", "--folds", "3", "--name", "loso", workspace=ws)
    run_cli("split", "--check", "loso", workspace=ws)
    assert "leaks subjects by design" in run_cli("split", "--miskow", workspace=ws).stdout
    bad = run_cli("split", "--check", "miskow", workspace=ws, check=False)
    assert bad.returncode == 2 and "leaks" in bad.stderr + bad.stdout
    if not model_registered("vgg16"):
        pytest.skip("vgg16 is not registered yet (models helper); prepare and split were checked")
    refused = run_cli("train", "vgg16", "--input", "image", "--split", "miskow", "--epochs", "1", "--quiet",
                      workspace=ws, check=False)
    assert refused.returncode == 2 and "--allow-leak" in refused.stderr + refused.stdout
    run_cli("train", "vgg16", "--split", "miskow", "--epochs", "1", "--batch-size", "4",  # image input inferred
            "--allow-leak", "--quiet", workspace=ws)
    assert list((ws / "runs" / "jaffe").glob("*/miskow/*/metrics.json"))
