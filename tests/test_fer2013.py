"""FER2013: the real prepare flow on miniatures of both releases (a real CSV; real JPEG class folders),
bad rows included, then the image store, the splits, and the command line."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import polars as pl
import pytest

from conftest import run_cli
from emotk.datasets import get_dataset, prepare_dataset
from emotk.datasets.faceimages import miskow_split, write_miskow_split
from emotk.errors import DatasetError, WorkspaceError
from emotk.features.images import image_store_attrs, load_images, read_image_store
from emotk.splits import check
from emotk.workspace import MANIFEST_COLUMNS, Workspace
from fer_factory import FER_CLASSES, make_fer2013_csv, make_fer2013_folders

# The challenge's Usage → split rule as the issue states it (not read from emotk).
USAGE_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}


def failures_of(ws: Workspace, dataset: str) -> list[dict]:
    with open(ws.failures_path(dataset), newline="") as fh:
        return list(csv.DictReader(fh))


def model_registered(name: str) -> bool:
    import emotk.models  # noqa: F401  (families register on import)
    from emotk.models.registry import MODELS

    return name in MODELS


@pytest.fixture(scope="module")
def csv_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("fer-raw")
    return root, make_fer2013_csv(root)


@pytest.fixture(scope="module")
def csv_prepared(csv_raw, tmp_path_factory):
    root, made = csv_raw
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    manifest, failures = prepare_dataset(ws, "fer2013", root, progress=False)
    return ws, manifest, failures, made


def test_task_is_seven_class_single_image():
    task = get_dataset("fer2013").task
    assert (task.kind, task.targets, task.metric, task.seq_len, task.head, task.n_classes) == (
        "clip_classification", ("label",), "acc", 1, "logits", 7)


def test_csv_manifest_rows(csv_prepared):
    ws, m, _, made = csv_prepared
    assert set(MANIFEST_COLUMNS) <= set(m.columns) and {"label", "label_name", "row"} <= set(m.columns)
    good = made["good"]
    assert sorted(m["row"].to_list()) == sorted(good)
    for r in m.iter_rows(named=True):
        label, usage, _ = good[r["row"]]
        assert r["sample_id"] == f"fer-{r['row']:05d}" and r["subject"] == r["sample_id"]  # one subject per image
        assert (r["label"], r["label_name"], r["split"]) == (label, FER_CLASSES[label], USAGE_SPLIT[usage])
        assert (r["kind"], r["media"], r["media_root"], r["media_kind"]) == ("image", "fer2013.csv", "raw", "image")
        assert (r["n_frames"], r["fps"], r["frame_base"], r["line"]) == (1, 0.0, 0, r["row"] + 2)
    info = json.loads(ws.info_path("fer2013").read_text())
    assert info["label_names"] == list(FER_CLASSES) and info["task"]["n_classes"] == 7


def test_csv_store_holds_the_csv_pixels(csv_prepared):
    ws, m, _, made = csv_prepared
    images = read_image_store(ws.images_path("fer2013"))
    assert sorted(images) == sorted(m["sample_id"].to_list())
    for r in m.iter_rows(named=True):
        assert images[r["sample_id"]].dtype == np.uint8
        np.testing.assert_array_equal(images[r["sample_id"]], made["good"][r["row"]][2])
    ids = m["sample_id"].to_list()[::-1]
    block = load_images(ws.images_path("fer2013"), ids)  # the fast reader: the same pixels, in the order asked
    assert block.shape == (len(ids), 48, 48) and all((block[i] == images[s]).all() for i, s in enumerate(ids))
    with pytest.raises(WorkspaceError, match="no image for sample 'fer-99999'"):
        load_images(ws.images_path("fer2013"), ["fer-99999"])
    attrs = image_store_attrs(ws.images_path("fer2013"))
    assert (attrs["source"], attrs["size"], attrs["channels"], attrs["detector"]) == ("fer2013.csv", 48, 1, "none")
    assert attrs["emotk_version"]


def test_csv_bad_rows_are_listed_not_kept(csv_prepared):
    ws, m, failures, made = csv_prepared
    listed = {f["sample_id"]: f for f in failures_of(ws, "fer2013")}
    assert sorted(listed) == sorted(f"fer-{row:05d}" for row in made["bad"])
    for row, why in made["bad"].items():
        f = listed[f"fer-{row:05d}"]
        assert why in f["reason"] and f["file"] == f"fer2013.csv:{row + 2}" and f["what_to_do"]
    assert not set(listed) & set(m["sample_id"].to_list())


def test_icml_copy_with_spaced_header_in_a_subfolder(tmp_path):
    made = make_fer2013_csv(tmp_path / "raw", per_class=1, header="emotion, pixels, Usage", folder="fer2013")
    ws = Workspace.open(tmp_path / "ws")
    m, _ = prepare_dataset(ws, "fer2013", tmp_path / "raw", progress=False)
    assert m.height == len(made["good"]) and set(m["media"]) == {"fer2013/fer2013.csv"}


def test_csv_without_its_header_is_refused(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "fer2013.csv").write_text("3,1 2 3,Training\n")
    with pytest.raises(DatasetError, match="emotion,pixels,Usage"):
        prepare_dataset(Workspace.open(tmp_path / "ws"), "fer2013", tmp_path / "raw", progress=False)


def test_undecodable_bytes_fail_their_row_only(tmp_path):
    (tmp_path / "raw").mkdir()
    ok = " ".join(["7"] * 2304)
    (tmp_path / "raw" / "fer2013.csv").write_bytes(
        b"emotion,pixels,Usage\n3," + ok.encode() + b",Training\n2,\xff\xfe" + ok[1:].encode() + b",Training\n")
    ws = Workspace.open(tmp_path / "ws")
    m, failures = prepare_dataset(ws, "fer2013", tmp_path / "raw", progress=False)
    assert m["sample_id"].to_list() == ["fer-00000"]
    assert [(f["sample_id"], f["file"]) for f in failures] == [("fer-00001", "fer2013.csv:3")]


def test_size_and_colour_options(csv_raw, tmp_path):
    root, made = csv_raw
    ws = Workspace.open(tmp_path / "ws")
    m, _ = prepare_dataset(ws, "fer2013", root, face_size=64, color="rgb", progress=False)
    images = read_image_store(ws.images_path("fer2013"))
    first = m.row(0, named=True)
    im = images[first["sample_id"]]
    assert im.shape == (64, 64, 3) and (im[..., 0] == im[..., 2]).all()
    expected = cv2.resize(made["good"][first["row"]][2], (64, 64), interpolation=cv2.INTER_LINEAR)
    assert np.abs(im[..., 0].astype(int) - expected).max() <= 1
    with pytest.raises(DatasetError, match="color"):
        prepare_dataset(ws, "fer2013", root, color="blue", progress=False)


def test_image_folder_release(tmp_path):
    made = make_fer2013_folders(tmp_path / "raw")
    ws = Workspace.open(tmp_path / "ws")
    m, _ = prepare_dataset(ws, "fer2013", tmp_path / "raw", progress=False)
    by_media = {r["media"]: r for r in m.iter_rows(named=True)}
    assert sorted(by_media) == sorted(made["good"])
    images = read_image_store(ws.images_path("fer2013"))
    for rel, (label, split) in made["good"].items():
        r = by_media[rel]
        assert (r["label"], r["label_name"], r["split"], r["subject"]) == (label, FER_CLASSES[label], split, r["sample_id"])
        decoded = cv2.imread(str(tmp_path / "raw" / rel), cv2.IMREAD_GRAYSCALE)  # another decoder
        assert np.abs(images[r["sample_id"]].astype(int) - decoded).max() <= 2
    listed = {f["file"]: f["reason"] for f in failures_of(ws, "fer2013")}
    assert sorted(listed) == sorted(made["bad"])
    for rel, why in made["bad"].items():
        assert why in listed[rel]
    info = json.loads(ws.info_path("fer2013").read_text())
    assert info["variant"] == "folders" and any("converted to grey" in n for n in info["notes"])


def test_official_and_miskow_splits(csv_prepared):
    ws, m, _, _ = csv_prepared
    table = miskow_split(m)
    assert table.columns == ["sample_id", "subject", "split"] and table.height == m.height
    joined = table.join(m.select("sample_id", "label", pl.col("split").alias("official")), on="sample_id")
    # Miskow on FER2013: Kaggle's test folder (Public + Private) is the test part
    assert (joined.filter(pl.col("official") != "train")["split"] == "test").all()
    for label in range(7):  # then the first 30 % of each class's training images (name order) validate
        train = sorted(joined.filter((pl.col("official") == "train") & (pl.col("label") == label))["sample_id"])
        n_val = int(0.3 * len(train))
        parts = dict(zip(joined["sample_id"], joined["split"]))
        assert [parts[s] for s in train] == ["validation"] * n_val + ["train"] * (len(train) - n_val)
    check(table)  # one subject per image: nothing can leak
    path = write_miskow_split(ws, "fer2013")
    assert path == ws.split_path("fer2013", "miskow") and pl.read_parquet(path).equals(table)


def test_cli_prepare_split_train(csv_raw, tmp_path):
    root, made = csv_raw
    ws = tmp_path / "ws"
    out = run_cli("prepare", "fer2013", "--root", str(root), "--quiet", workspace=ws).stdout
    assert f"{len(made['good'])} samples" in out and f"{len(made['bad'])} problems" in out
    run_cli("split", "--official", workspace=ws)
    assert "official" in run_cli("split", "--check", "official", workspace=ws).stdout
    if not model_registered("vgg16"):
        pytest.skip("vgg16 is not registered yet (models helper); prepare and split were checked")
    run_cli("train", "vgg16", "--input", "image", "--split", "official", "--epochs", "1", "--batch-size", "8", "--quiet",
            workspace=ws)
    assert list((ws / "runs" / "fer2013").glob("*/official/*/metrics.json"))
