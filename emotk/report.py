"""Paper-style tables and training-curve plots over run directories.

A run directory (written by the train loop) is
``<runs>/<dataset>/<model>-<size>-<hash>/<split>/<part>-seed<s>/`` with

- ``config.json``: at least ``model``, ``size``, ``dataset``, ``split``, ``fold`` (``k`` or null),
  ``seed``; as the loop writes it also ``config_hash`` and ``identity`` (the resolved configuration
  behind the hash), ``protocol_name``, ``select_on`` (val | heldout | last), ``params``, ``macs``,
  ``metric`` (the primary metric name), ``emotk_version``;
- ``metrics.json``: ``{"status": "finished", "best_epoch": int, "metrics": {name: float}}`` — the
  metrics of the selected weights on the reported part; a run without it, or with another status,
  is unfinished;
- ``history.csv``: ``epoch, stage, stage_epoch, train_loss, val_<metric>, lr``.

:func:`collect` reads finished runs into one row each (and lists the runs it skipped, with the reason);
:func:`summarize` reports mean ± std over *all* folds × seeds of one configuration — one row per
configuration hash, never averaged across configurations (sample std, ddof=1, null for one run), with
a ``differs`` column saying what sets a row apart from the other rows of the same model and data;
:func:`render` prints markdown, CSV or LaTeX (booktabs) with the selection rule of every row;
:func:`plot_curves` draws training curves.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import polars as pl

from emotk.atomic import atomic_path
from emotk.errors import EmotkError, RunError

__all__ = ["find_runs", "collect", "summarize", "render", "table", "plot_curves", "GROUP_KEYS", "FORMATS"]

GROUP_KEYS = ("model", "size", "dataset", "split", "protocol", "select_on", "inputs", "config")
"""Columns that identify one configuration (one table row); ``config`` is the configuration hash."""

SELECTION_NOTE = {
    "val": "epoch selected on a validation part, never on the reported part",
    "heldout": "epoch selected on the reported part itself (the papers' optimistic rule)",
    "last": "last epoch, no selection",
}

FORMATS = ("md", "csv", "latex")

#: What the accuracy-like metrics compute, printed under every table that shows them: papers name them
#: inconsistently (Rajan et al.'s released code calls overall accuracy "UWA" and the class-balanced one "WA").
METRIC_NOTE = {
    "wa": "wa = overall accuracy (correct / all utterances)",
    "acc": "acc = overall accuracy (correct / all samples)",
    "ua": "ua = mean per-class recall (class-balanced accuracy); Rajan et al.'s released code calls overall "
          "accuracy \"UWA\" and this one \"WA\"",
    "wacc": "wacc = MESM's binary weighted accuracy (TP·N/P + TN) / 2N, mean over the labels",
}

_RUN_COLUMNS = ("model", "size", "dataset", "split", "protocol", "select_on", "inputs", "config", "identity", "fold", "seed",
                "params", "macs", "best_epoch", "run_dir")
_REQUIRED_CONFIG = ("model", "dataset", "split", "fold", "seed")
_DASH = "—"


# --------------------------------------------------------------------------------------- reading


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding both ``config.json`` and ``metrics.json``) under ``paths``, recursively.

    A path may itself be a run directory. Finished or not is decided by :func:`collect`. The result
    is sorted and free of duplicates; a path that does not exist raises :class:`RunError`.
    """
    found: set[Path] = set()
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise RunError(f"{root}: no such file or directory; pass the runs folder or a run directory")
        if root.is_file():
            root = root.parent
        candidates = [root / "config.json"] if (root / "config.json").is_file() else []
        candidates += root.rglob("config.json")
        for cfg in candidates:
            if cfg.is_file() and (cfg.parent / "metrics.json").is_file():
                found.add(cfg.parent.resolve())
    return sorted(found)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}; re-run or delete this run") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _label(value) -> str | None:
    """A config value (string, number or named object) as a table label."""
    if value is None:
        return None
    if isinstance(value, dict):
        if isinstance(value.get("name"), str):
            return value["name"]
        return json.dumps(value, sort_keys=True)
    return str(value)


def _as_int(value, path: Path, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise RunError(f"{path}: {key!r} should be an integer, found {value!r}")
    return int(value)


def _as_float(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _read_run(run_dir: Path) -> tuple[dict, dict[str, float]] | None:
    """(fixed columns, metrics) of a finished run; None when the run is unfinished."""
    result = _read_json(run_dir / "metrics.json")
    if result.get("status") != "finished":
        return None
    metrics = result.get("metrics")
    if not isinstance(metrics, dict):
        raise RunError(f"{run_dir / 'metrics.json'}: status is finished but 'metrics' is not an object")
    cfg_path = run_dir / "config.json"
    cfg = _read_json(cfg_path)
    missing = [k for k in _REQUIRED_CONFIG if k not in cfg]
    if missing:
        raise RunError(f"{cfg_path}: missing key(s) {', '.join(missing)}; this run was not written by emotk train")
    row = {
        "model": _label(cfg["model"]),
        "size": _label(cfg.get("size")),
        "dataset": _label(cfg["dataset"]),
        "split": _label(cfg["split"]),
        "protocol": _label(cfg.get("protocol_name", cfg.get("protocol"))),
        "select_on": _label(cfg.get("select_on", result.get("select_on"))),
        "inputs": _inputs_label(cfg.get("inputs")),
        "config": _label(cfg.get("config_hash")),
        "identity": json.dumps(cfg.get("identity"), sort_keys=True, default=str) if cfg.get("identity") else None,
        "fold": _label(cfg["fold"]) if cfg["fold"] is not None else "official",
        "seed": _as_int(cfg["seed"], cfg_path, "seed"),
        "params": _as_int(cfg.get("params"), cfg_path, "params"),
        "macs": _as_int(cfg.get("macs"), cfg_path, "macs"),
        "best_epoch": _as_int(result.get("best_epoch"), run_dir / "metrics.json", "best_epoch"),
        "run_dir": str(run_dir),
    }
    values = {str(k): _as_float(v) for k, v in metrics.items()}
    return row, values


def _inputs_label(inputs) -> str | None:
    """``text=glove audio=mfcc`` for a run's input streams (``crops``, ``image`` without a name)."""
    if not isinstance(inputs, dict) or not inputs:
        return None
    order = ("frames", "crops", "image", "text", "audio", "video")
    keys = sorted(inputs, key=lambda k: (order.index(k) if k in order else len(order), k))
    return " ".join(f"{k}={inputs[k]}" if inputs[k] else str(k) for k in keys)


def collect(paths: Iterable[str | Path], skipped: list[tuple[str, str]] | None = None) -> pl.DataFrame:
    """One row per finished run under ``paths``.

    Columns: ``model, size, dataset, split, protocol, fold`` (str: ``"0"``, ``"1"``, … or
    ``"official"``), ``seed``, ``params``, ``macs`` (null when the config has none), ``best_epoch``,
    ``run_dir``, then one Float64 column per metric (null where a run lacks it or stored NaN).
    Unfinished runs are skipped; no finished run at all raises :class:`RunError`.
    """
    paths = [Path(p) for p in paths]
    run_dirs = find_runs(paths)
    rows: list[dict] = []
    metric_names: list[str] = []
    unfinished = 0
    for run_dir in run_dirs:
        read = _read_run(run_dir)
        if read is None:
            unfinished += 1
            if skipped is not None:
                skipped.append((str(run_dir), "unfinished (metrics.json status is not 'finished')"))
            continue
        row, values = read
        for name, v in values.items():
            if name in _RUN_COLUMNS:
                raise RunError(f"{run_dir / 'metrics.json'}: metric name {name!r} clashes with a run column")
            if name not in metric_names:
                metric_names.append(name)
        rows.append((row, values))
    if not rows:
        where = ", ".join(str(p) for p in paths) or "(no paths)"
        detail = f"{unfinished} unfinished run(s) found" if unfinished else "no run directory (config.json + metrics.json) found"
        raise RunError(f"no finished runs under {where}: {detail}; train with `emotk train` first or point at the runs folder")
    schema = {
        "model": pl.Utf8, "size": pl.Utf8, "dataset": pl.Utf8, "split": pl.Utf8, "protocol": pl.Utf8,
        "select_on": pl.Utf8, "inputs": pl.Utf8, "config": pl.Utf8, "identity": pl.Utf8, "fold": pl.Utf8, "seed": pl.Int64, "params": pl.Int64, "macs": pl.Int64, "best_epoch": pl.Int64,
        "run_dir": pl.Utf8,
    }
    schema.update({name: pl.Float64 for name in metric_names})
    records = [{**row, **{name: values.get(name) for name in metric_names}} for row, values in rows]
    return pl.DataFrame(records, schema=schema)


def _metric_columns(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in _RUN_COLUMNS]


# --------------------------------------------------------------------------------------- summary


def primary_metric(paths: Iterable[str | Path]) -> str:
    """The primary metric the runs under ``paths`` were selected on (config.json ``metric``); one only."""
    names = sorted({_read_json(run / "config.json").get("metric") for run in find_runs(paths)} - {None})
    if len(names) != 1:
        raise RunError(f"the runs use {'different primary metrics (' + ', '.join(names) + ')' if names else 'no recorded metric'}: "
                       "pass --metric, or point report at one dataset's runs.")
    return names[0]


def _flatten(obj, prefix: str = "") -> dict[str, str]:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: json.dumps(obj, sort_keys=True, default=str)}


def _short(key: str, value: str) -> str:
    key = key.removeprefix("protocol.").removeprefix("model_options.")
    if key.startswith("fingerprints."):
        digest = json.loads(value)
        return f"{key.removeprefix('fingerprints.')} " + (f"file {digest[:8]}" if isinstance(digest, str) else "not read")
    return f"{key}={value.strip(chr(34))}"


def differences(identities: list[str | None]) -> list[str]:
    """Per identity (JSON), the settings in which it differs from the others given ("" when alone or equal)."""
    flat = [_flatten(json.loads(i)) if i else {} for i in identities]
    if len(flat) < 2:
        return [""] * len(flat)
    keys = sorted({k for f in flat for k in f})
    # the inputs have a column of their own (Inputs); a cache's fingerprint counts only where every
    # configuration reads that cache (it changed between them), not where one of them does not read it
    varying = [k for k in keys if len({f.get(k) for f in flat}) > 1
               and not k.startswith(("protocol.description", "protocol.name", "inputs."))
               and not (k.startswith("fingerprints.features:") and any(k not in f for f in flat))]
    return [", ".join(_short(k, f.get(k, "null")) for k in varying) for f in flat]


def summarize(df: pl.DataFrame, metric: str, skipped: list[tuple[str, str]] | None = None) -> pl.DataFrame:
    """Mean ± std of ``metric`` over every fold × seed of each (model, size, dataset, split, protocol).

    Never the best seed: all runs count. ``std`` is the sample standard deviation (ddof=1), null
    when only one run has the metric. Columns: the group keys, ``metric``, ``mean``, ``std``,
    ``n_runs`` (runs with the metric), ``n_folds``, ``n_seeds``, ``params``, and ``macs`` when any run
    recorded it. An unknown metric raises :class:`RunError` listing the available ones.
    """
    available = _metric_columns(df)
    if metric not in available:
        raise RunError(
            f"metric {metric!r} is in none of the {df.height} finished run(s); "
            f"available metrics: {', '.join(available) or '(none)'}"
        )
    runs = df.filter(pl.col(metric).is_not_null() & pl.col(metric).is_not_nan())
    if skipped is not None:
        for r in df.filter(~(pl.col(metric).is_not_null() & pl.col(metric).is_not_nan())).iter_rows(named=True):
            skipped.append((r["run_dir"], f"no {metric!r} in its metrics (dataset {r['dataset']}, metric "
                                          f"{', '.join(c for c in _metric_columns(df) if r.get(c) is not None)})"))
    if runs.height == 0:
        raise RunError(f"metric {metric!r} has no value in any finished run; available metrics: {', '.join(available)}")
    keys = list(GROUP_KEYS)
    dupes = runs.group_by([*keys, "fold", "seed"]).agg(pl.len().alias("n")).filter(pl.col("n") > 1)
    if dupes.height:
        first = dupes.row(0, named=True)
        warnings.warn(
            f"{dupes.height} (fold, seed) pair(s) appear in more than one run directory, e.g. "
            f"{first['model']}-{first['size']} on {first['dataset']} fold {first['fold']} seed {first['seed']}; "
            "each is counted — pass one runs folder per experiment",
            stacklevel=2,
        )
    aggs = [
        pl.lit(metric).alias("metric"),
        pl.col(metric).mean().alias("mean"),
        pl.col(metric).std(ddof=1).alias("std"),
        pl.len().cast(pl.Int64).alias("n_runs"),
        pl.col("fold").n_unique().cast(pl.Int64).alias("n_folds"),
        pl.col("seed").n_unique().cast(pl.Int64).alias("n_seeds"),
        pl.col("params").drop_nulls().first().alias("params"),
        pl.col("identity").drop_nulls().first().alias("identity"),
    ]
    has_macs = "macs" in runs.columns and runs["macs"].null_count() < runs.height
    if has_macs:
        aggs.append(pl.col("macs").drop_nulls().first().alias("macs"))
    out = runs.group_by(keys, maintain_order=True).agg(aggs)
    out = out.sort(["dataset", "split", "protocol", "model", "size", "config"], nulls_last=True)
    differs = [""] * out.height
    rows = out.select("model", "size", "dataset", "split", "identity").to_dicts()
    same: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        same.setdefault((r["model"], r["size"], r["dataset"], r["split"]), []).append(i)
    for idx in same.values():
        for i, text in zip(idx, differences([rows[i]["identity"] for i in idx])):
            differs[i] = text
    paper = [_published(r["model"], r["size"], r["dataset"], metric) for r in out.select("model", "size", "dataset").to_dicts()]
    return out.drop("identity").with_columns(pl.Series("differs", differs, dtype=pl.Utf8),
                                             pl.Series("paper", [p[0] if p else None for p in paper], dtype=pl.Float64),
                                             pl.Series("paper_protocol", [p[1] if p else None for p in paper], dtype=pl.Utf8))


def _published(model: str | None, size: str | None, dataset: str | None, metric: str) -> tuple[float, str] | None:
    """The paper's figure for this row (a preset's ``published`` entry), or None."""
    if not model or not dataset:
        return None
    try:
        from emotk.models import published
    except ImportError:  # pragma: no cover - the models need torch, which emotk depends on
        return None
    return published(model, size, dataset, metric)


# --------------------------------------------------------------------------------------- rendering


def _si(n: int | None, unit: str = "") -> str:
    if n is None:
        return _DASH
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{suffix}{unit}"
    return f"{n}{unit}"


def _direction(metric: str) -> str:
    try:
        from emotk.metrics import higher_is_better
    except ImportError:  # pragma: no cover - metrics is part of the package
        return ""
    try:
        return "↑" if higher_is_better(metric) else "↓"
    except KeyError:
        return ""


def _rows(summary: pl.DataFrame, digits: int) -> tuple[list[str], list[list[str]]]:
    has_macs = "macs" in summary.columns
    has_paper = "paper" in summary.columns and summary["paper"].null_count() < summary.height
    header = ["Model", "Dataset", "Split", "Protocol", "Selection", "mean ± std"] + (["Paper"] if has_paper else []) + \
        ["Runs", "Params"] + (["MACs"] if has_macs else [])
    # the inputs column where they tell rows apart or name per-utterance streams (uni-/bi-/tri-modal)
    labels = [x for x in summary["inputs"].to_list() if x]
    show_inputs = len(set(summary["inputs"].to_list())) > 1 or any(
        any(part.split("=")[0] in ("text", "audio", "video") for part in x.split()) for x in labels)
    if show_inputs:
        header.append("Inputs")
    if summary["differs"].str.len_chars().max():
        header.append("Config (differs)")
    body = []
    for r in summary.iter_rows(named=True):
        model = r["model"] if r["size"] is None else f"{r['model']}-{r['size']}"
        std = _DASH if r["std"] is None else f"{r['std']:.{digits}f}"
        cells = [
            model,
            r["dataset"] or _DASH,
            r["split"] or _DASH,
            r["protocol"] or _DASH,
            (r["select_on"] or _DASH) + (" (optimistic)" if r["select_on"] == "heldout" else ""),
            f"{r['mean']:.{digits}f} ± {std}",
            *([_DASH if r["paper"] is None else f"{r['paper']:.{digits}f}"] if has_paper else []),
            str(r["n_runs"]),
            _si(r["params"]),
        ]
        if has_macs:
            cells.append(_si(r["macs"]))
        if show_inputs:
            cells.append(r["inputs"] or _DASH)
        if "Config (differs)" in header:
            cells.append(f"{r['config'] or _DASH}" + (f": {r['differs']}" if r["differs"] else ""))
        body.append(cells)
    return header, body


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    text = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)
    return text.replace(" ± ", r" $\pm$ ").replace(_DASH, "--").replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")


def render(summary: pl.DataFrame, metric: str, fmt: str = "md", digits: int = 4) -> str:
    """The summary as text: ``md`` (pipe table), ``csv`` (raw numbers, empty std for one run) or
    ``latex`` (tabular with booktabs rules; needs ``\\usepackage{booktabs}``)."""
    if fmt not in FORMATS:
        raise EmotkError(f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    if summary.height == 0:
        raise RunError("nothing to render: the summary has no rows")
    if fmt == "csv":
        cols = [*GROUP_KEYS, "metric", "mean", "std", "n_runs", "n_folds", "n_seeds", "params"]
        cols += ["macs"] if "macs" in summary.columns else []
        cols += ["differs"] + [c for c in ("paper", "paper_protocol") if c in summary.columns]
        return summary.select(cols).write_csv()
    header, body = _rows(summary, digits)
    arrow = _direction(metric)
    header[5] = f"{metric}{' ' + arrow if arrow else ''} (mean ± std)"
    rules = sorted({r for r in summary["select_on"].to_list() if r})
    note = "Selection: " + "; ".join(f"{r} = {SELECTION_NOTE.get(r, r)}" for r in rules) + "." if rules else ""
    if metric in METRIC_NOTE:
        note = (note + "\n" if note else "") + METRIC_NOTE[metric] + "."
    if "paper" in summary.columns:
        protocols = sorted({p for p in summary["paper_protocol"].to_list() if p})
        if protocols:
            note = (note + "\n" if note else "") + "Paper = the figure the paper prints for this model and dataset, " \
                "measured under its own protocol: " + "; ".join(protocols) + "."
    if fmt == "md":
        right = set(range(5, 5 + sum(h in header for h in ("Paper", "Runs", "Params", "MACs")) + 1))
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")
    spec = "lllll" + "r" * (len(header) - 5)
    lines = [
        r"% requires \usepackage{booktabs}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"] + ([f"% {note}"] if note else [])
    return "\n".join(lines) + "\n"


def table(paths: Iterable[str | Path], metric: str, fmt: str = "md", digits: int = 4) -> str:
    """:func:`collect` → :func:`summarize` → :func:`render` in one call."""
    return render(summarize(collect(paths), metric), metric, fmt, digits)


# --------------------------------------------------------------------------------------- plots


def _plot_name(run_dir: Path) -> str:
    parts = run_dir.resolve().parts[-4:]
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", "_".join(parts)).strip("_") or "run"


def plot_curves(run_dirs: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """One PNG per run with its training curves from ``history.csv``; returns the files written.

    Panels: losses (``*loss`` columns), validation metrics (other ``val_*`` columns; the best epoch
    from ``metrics.json`` is marked), and the learning rate (log scale) when ``lr`` is present.
    Unfinished runs are plotted too. A run without a readable ``history.csv`` is skipped with a
    warning; if none can be plotted, :class:`RunError`. Uses matplotlib's Agg canvas directly (no
    pyplot, no global backend change); files are written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    problems: list[str] = []
    for run_dir in map(Path, run_dirs):
        hist_path = run_dir / "history.csv"
        try:
            hist = pl.read_csv(hist_path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            problems.append(f"{hist_path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        numeric = [c for c, t in hist.schema.items() if t.is_numeric()]
        if hist.height == 0 or not numeric:
            problems.append(f"{hist_path}: no numeric rows")
            continue
        x = hist["epoch"].to_numpy() if "epoch" in numeric else list(range(1, hist.height + 1))
        losses = [c for c in numeric if c.endswith("loss")]
        vals = [c for c in numeric if c.startswith("val_") and c not in losses]
        panels = [("loss", losses, False), ("validation metrics", vals, False)]
        if "lr" in numeric:
            panels.append(("learning rate", ["lr"], bool((hist["lr"].drop_nulls() > 0).all())))
        panels = [p for p in panels if p[1]]
        if not panels:
            problems.append(f"{hist_path}: no loss, val_* or lr column (columns: {', '.join(hist.columns)})")
            continue
        best_epoch = None
        if (run_dir / "metrics.json").is_file():
            try:
                best_epoch = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("best_epoch")
            except (OSError, json.JSONDecodeError):
                best_epoch = None

        fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=100)
        FigureCanvasAgg(fig)
        name = _plot_name(run_dir)
        fig.suptitle(name, fontsize=9)
        for i, (title, cols, logy) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            for c in cols:
                ax.plot(x, hist[c].to_numpy(), marker="o", markersize=2.5, linewidth=1.2, label=c)
            if logy:
                ax.set_yscale("log")
            if isinstance(best_epoch, (int, float)) and title != "learning rate":
                ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=0.8, label=f"best ({best_epoch})")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()

        stem, k = name, 1
        while stem in used:
            k += 1
            stem = f"{name}_{k}"
        used.add(stem)
        target = out_dir / f"{stem}.png"
        with atomic_path(target, ".png") as tmp:
            fig.savefig(tmp, format="png")
        written.append(target)
    for p in problems:
        warnings.warn(f"training curves skipped: {p}", stacklevel=2)
    if not written:
        raise RunError("no training curves plotted: " + ("; ".join(problems) or "no run directories given"))
    return written


# --------------------------------------------------------------------------------------- confusion matrices


def write_confusion(run_dir: str | Path, true, pred, names: Sequence[str]) -> tuple[Path, Path]:
    """``confusion.csv`` (counts, rows = true class, columns = predicted) and ``confusion.png`` (rows
    normalised to recall, counts printed in every cell) in ``run_dir``; both written atomically."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from emotk.metrics import confusion_matrix

    run_dir = Path(run_dir)
    k = len(names)
    counts = confusion_matrix(np.asarray(true), np.asarray(pred), num_classes=k)
    table = pl.DataFrame({"true": list(names), **{str(n): counts[:, j].tolist() for j, n in enumerate(names)}})
    csv_path, png_path = run_dir / "confusion.csv", run_dir / "confusion.png"
    with atomic_path(csv_path, ".csv") as tmp:
        table.write_csv(tmp)
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    side = 1.2 + 0.55 * k
    fig = Figure(figsize=(side + 1.2, side), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{counts[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(k), labels=list(names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(names), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{run_dir.parent.parent.parent.name} · {run_dir.name} (row share = recall)", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_path(png_path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return csv_path, png_path
