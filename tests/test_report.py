"""emotk.report on real run directories built in tmp_path."""

from __future__ import annotations

import csv
import io
import json
import statistics
import warnings
from pathlib import Path

import polars as pl
import pytest

from emotk.errors import EmotkError, RunError
from emotk.report import collect, find_runs, plot_curves, render, summarize, table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
    runs: Path,
    *,
    model="nactcn",
    size="sm",
    dataset="affwild2",
    split="subject5",
    fold=0,
    seed=0,
    metrics=None,
    status="finished",
    params=123_456,
    macs=None,
    protocol="va-pooled",
    epochs=4,
    write_metrics=True,
) -> Path:
    fold_part = f"fold{fold}" if isinstance(fold, int) else str(fold)
    run = runs / dataset / f"{model}-{size}" / split / f"{fold_part}-seed{seed}"
    run.mkdir(parents=True)
    config = {
        "model": model, "size": size, "dataset": dataset, "split": split, "fold": fold, "seed": seed,
        "protocol": protocol, "params": params, "metric": "ccc", "emotk_version": "0.1.0",
    }
    if macs is not None:
        config["macs"] = macs
    (run / "config.json").write_text(json.dumps(config, indent=2))
    if write_metrics:
        body = {"status": status, "best_epoch": epochs - 1, "metrics": metrics or {}}
        (run / "metrics.json").write_text(json.dumps(body))
    with open(run / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "val_loss", "val_ccc", "lr"])
        for e in range(epochs):
            w.writerow([e, 1.0 / (e + 1), 1.2 / (e + 1), 0.1 * e, 1e-3 * 0.5**e])
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    # nactcn-sm: 2 folds x 2 seeds
    values = {(0, 0): 0.50, (0, 1): 0.54, (1, 0): 0.46, (1, 1): 0.60}
    for (fold, seed), v in values.items():
        make_run(root, fold=fold, seed=seed, metrics={"ccc": v, "ccc_valence": v + 0.05, "mse": 0.1}, macs=9_000_000)
    # an unfinished run of the same configuration must not count
    make_run(root, fold=2, seed=0, metrics={"ccc": 0.99}, status="running", macs=9_000_000)
    make_run(root, fold=3, seed=0, write_metrics=False, macs=9_000_000)
    # tcn-lg: a single official run (std undefined), without the valence CCC
    make_run(root, model="tcn", size="lg", split="official", fold="official", seed=3,
             metrics={"ccc": 0.42, "mse": 0.2}, params=2_500_000)
    return root


def test_find_runs_and_collect(runs: Path):
    found = find_runs([runs])
    assert len(found) == 6  # config.json + metrics.json, finished or not
    assert find_runs([found[0]]) == [found[0]]
    df = collect([runs])
    assert df.height == 5
    assert set(df["model"]) == {"nactcn", "tcn"}
    assert {"ccc", "ccc_valence", "mse"} <= set(df.columns)
    assert 0.99 not in df["ccc"].to_list()
    tcn = df.filter(pl.col("model") == "tcn").row(0, named=True)
    assert tcn["fold"] == "official" and tcn["seed"] == 3 and tcn["params"] == 2_500_000
    assert tcn["ccc_valence"] is None and tcn["macs"] is None
    assert df.filter(pl.col("model") == "nactcn")["fold"].sort().to_list() == ["0", "0", "1", "1"]


def test_summarize_mean_std_over_all_folds_and_seeds(runs: Path):
    s = summarize(collect([runs]), "ccc")
    assert s.height == 2
    nac = s.filter(pl.col("model") == "nactcn").row(0, named=True)
    vals = [0.50, 0.54, 0.46, 0.60]
    assert nac["mean"] == pytest.approx(statistics.mean(vals))
    assert nac["std"] == pytest.approx(statistics.stdev(vals))  # ddof=1
    assert (nac["n_runs"], nac["n_folds"], nac["n_seeds"]) == (4, 2, 2)
    assert nac["params"] == 123_456 and nac["macs"] == 9_000_000
    tcn = s.filter(pl.col("model") == "tcn").row(0, named=True)
    assert tcn["mean"] == pytest.approx(0.42) and tcn["std"] is None and tcn["n_runs"] == 1
    # a metric only some runs have: only those runs count
    sv = summarize(collect([runs]), "ccc_valence")
    assert sv.height == 1 and sv["n_runs"][0] == 4
    assert sv["mean"][0] == pytest.approx(statistics.mean(vals) + 0.05)


def test_missing_metric_lists_available(runs: Path):
    df = collect([runs])
    with pytest.raises(RunError, match=r"available metrics: .*ccc.*mse"):
        summarize(df, "auc")


def test_no_finished_runs_is_a_clear_error(tmp_path: Path):
    make_run(tmp_path / "runs", status="failed", metrics={"ccc": 0.3})
    with pytest.raises(RunError, match="no finished runs.*1 unfinished"):
        collect([tmp_path / "runs"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmotkError, match="no finished runs"):
        collect([tmp_path / "empty"])
    with pytest.raises(RunError, match="no such file"):
        collect([tmp_path / "nowhere"])


def test_broken_json_names_the_file(tmp_path: Path):
    run = make_run(tmp_path / "runs", metrics={"ccc": 0.3})
    (run / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="config.json"):
        collect([tmp_path / "runs"])


def test_render_formats(runs: Path):
    s = summarize(collect([runs]), "ccc")
    md = render(s, "ccc", "md")
    lines = [line for line in md.strip().splitlines() if line.startswith("|")]
    assert lines[0].startswith("| Model") and "ccc ↑" in lines[0] and "MACs" in lines[0]
    assert len(lines) == 4 and all(line.endswith("|") for line in lines)
    # NAC-TCN's Table 1 figure for NAC-TCN sm on Aff-Wild2 (0.48 CCC) beside ours, and how the paper measured it
    assert "| Paper |" in lines[0] and "| 0.4800 |" in next(line for line in lines if "nactcn-sm" in line)
    assert "Mehta & Yang 2023, Table 1" in md
    assert "nactcn-sm" in md and "0.5250 ± 0.0597" in md
    assert "0.4200 ± —" in md and "123.46K" in md and "9.00M" in md

    out = render(s, "ccc", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2
    nac = next(r for r in rows if r["model"] == "nactcn")
    assert float(nac["mean"]) == pytest.approx(0.525) and nac["n_runs"] == "4"
    tcn = next(r for r in rows if r["model"] == "tcn")
    assert tcn["std"] == ""

    tex = render(s, "ccc", "latex")
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"0.5250 $\pm$ 0.0597" in tex and r"0.4200 $\pm$ --" in tex
    assert r"va-pooled" in tex and r"\end{tabular}" in tex
    body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len(body) == 3 and all(line.count(" & ") == 9 for line in body)  # 10 columns, Selection and Paper included

    with pytest.raises(EmotkError, match="unknown table format"):
        render(s, "ccc", "html")
    assert table([runs], "mse", "md").count("\n") == 4


def test_latex_escapes_underscores(tmp_path: Path):
    make_run(tmp_path / "runs", model="gru_attn", dataset="afew_va", metrics={"f1_macro": 0.3})
    tex = table([tmp_path / "runs"], "f1_macro", "latex")
    assert r"gru\_attn-sm" in tex and r"afew\_va" in tex and r"f1\_macro" in tex


def test_plot_curves_writes_valid_pngs(runs: Path, tmp_path: Path):
    run_dirs = find_runs([runs])
    out = tmp_path / "plots"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = plot_curves(run_dirs, out)
    assert len(paths) == len(run_dirs)
    assert len({p.name for p in paths}) == len(paths)
    for p in paths:
        assert p.parent == out and p.suffix == ".png"
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert not list(out.glob(".*tmp*"))


def test_plot_curves_skips_run_without_history(runs: Path, tmp_path: Path):
    good = find_runs([runs])[0]
    bad = tmp_path / "bad_run"
    bad.mkdir()
    with pytest.warns(UserWarning, match="history.csv"):
        paths = plot_curves([good, bad], tmp_path / "plots")
    assert len(paths) == 1
    with pytest.warns(UserWarning), pytest.raises(RunError, match="no training curves"):
        plot_curves([bad], tmp_path / "plots2")


def test_one_row_per_configuration_with_what_differs(tmp_path: Path):
    """Runs of one model that differ in configuration hash are never averaged; the row says what differs."""
    root = tmp_path / "runs"
    for cfg_hash, lr, values in (("aaaa1111", 1e-3, (0.5, 0.7)), ("bbbb2222", 5e-2, (0.1, 0.2))):
        for seed, v in enumerate(values):
            run = make_run(root / cfg_hash, seed=seed, metrics={"ccc": v})
            config = json.loads((run / "config.json").read_text())
            config.update(config_hash=cfg_hash, select_on="heldout" if cfg_hash == "bbbb2222" else "val",
                          identity={"model": "nactcn", "protocol": {"stages": [{"optimizer": {"lr": lr}}]}})
            (run / "config.json").write_text(json.dumps(config))
    s = summarize(collect([root]), "ccc")
    assert s.height == 2
    a = s.filter(pl.col("config") == "aaaa1111").row(0, named=True)
    b = s.filter(pl.col("config") == "bbbb2222").row(0, named=True)
    assert a["mean"] == pytest.approx(0.6) and b["mean"] == pytest.approx(0.15)
    assert a["differs"] == "stages.0.optimizer.lr=0.001" and b["differs"] == "stages.0.optimizer.lr=0.05"
    md = render(s, "ccc", "md")
    assert "heldout (optimistic)" in md and "bbbb2222: stages.0.optimizer.lr=0.05" in md
    assert "heldout = epoch selected on the reported part itself" in md


def test_confusion_matrix_files(tmp_path: Path):
    from emotk.report import write_confusion

    true = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 1, 0]
    csv_path, png = write_confusion(tmp_path, true, pred, ["angry", "happy", "sad"])
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    # hand count: true angry → 2 angry, 1 happy; true happy → 2 happy; true sad → 1 angry
    assert rows == [{"true": "angry", "angry": "2", "happy": "1", "sad": "0"},
                    {"true": "happy", "angry": "0", "happy": "2", "sad": "0"},
                    {"true": "sad", "angry": "1", "happy": "0", "sad": "0"}]
    assert png.read_bytes()[:8] == PNG_MAGIC
