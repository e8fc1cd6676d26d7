"""Training protocols as files: what is trained how, in one or more stages.

A protocol is a YAML file (shipped ones in ``emotk/protocols/``, named by their stem; or any path a
user passes). Top-level keys:

``name``, ``description``
``input``          ``frames`` (a cached feature stream), ``crops`` (face crops through a frame
                   encoder trained with the model, end to end), ``image`` (an image store) or
                   ``streams`` (per-utterance feature sequences: ``text``, ``audio``, ``video``)
``inputs``         for ``input: streams``: the default feature cache of each stream
                   (``{text: glove, audio: mfcc, video: resnet101}``); ``--input STREAM=NAME`` overrides
``lengths``        for ``input: streams``: the fixed length of each stream (zero padded, or cut keeping
                   the first steps), e.g. ``{text: 128, audio: 1000, video: 32}``
``metric``         the metric that selects the epoch and drives early stopping (default: the task's,
                   e.g. ``ua``); the reported table always carries every metric
``encoder``        for ``input: crops``: ``name`` (torchvision model), ``weights`` (imagenet | none |
                   PATH), ``image_size``, ``channels_last`` (CUDA), ``checkpointing`` (activation
                   checkpointing of the encoder)
``seq_len``        frames per window (null: the dataset's); ``frame_stride``: keep every n-th frame
``select_on``      ``val`` (a validation part, never the reported one: the split's own validation part
                   when it has a test part, else one carved from the training part by subject),
                   ``heldout`` (the papers' optimistic rule: the reported part) or ``last`` (last epoch)
``select_by``      what picks the epoch on the selection part: the task's ``metric`` (default) or the ``loss``
``val_fraction``   share of the training subjects carved out for ``select_on: val``
``stages``         a list; each stage: ``epochs`` (required), ``batch_size``, ``optimizer`` (``name``
                   adam | adamw | sgd, ``lr``, ``weight_decay``, ``betas``, ``eps``, ``momentum``,
                   ``nesterov``), ``groups`` (module-name prefix → ``lr`` / ``lr_scale`` /
                   ``weight_decay``), ``schedule`` (``name`` none | cosine | cosine_restarts | step |
                   plateau, ``per`` epoch | step, ``eta_min`` / ``eta_min_factor``, ``t0`` / ``t0_epochs``,
                   ``t_mult``, ``step_size``, ``gamma``, ``factor``, ``patience``, ``warmup_steps`` /
                   ``warmup_epochs``, ``monitor``: what plateau watches, the ``metric`` or the
                   ``loss`` on the selection part), ``early_stopping`` (``patience``, ``min_delta``,
                   ``restore_best``, ``monitor``: the task ``metric`` or the ``loss`` on the
                   selection part), ``freeze`` (module-name prefixes: no gradient, kept in eval
                   mode), ``augment`` (a list of ``{name: …, options}`` device augmentations) and
                   ``loss`` (options of the task's loss). A stage starts from the previous stage's
                   selected weights, with a fresh optimizer.
``datasets``       per dataset, dotted overrides (``{emoreact: {"stages.0.schedule.t0": 40}}``)

:func:`resolve` applies the dataset's overrides, then the user's (``--set KEY=VALUE``, ``--epochs`` …),
validates every key and type (a :class:`ProtocolError` names the file, the key and the valid
choices) and fills the defaults. The resolved protocol is part of a run's identity.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from emotk.errors import EmotkError

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "protocols"
DEFAULT_PROTOCOL = "frozen"
#: The protocol a model family trains under unless one is named.
FAMILY_PROTOCOLS = {"multimodal": "selfcross"}


def default_for(family: str) -> str:
    """The protocol of a model family when none is named: ``selfcross`` for the multimodal models, else
    :data:`DEFAULT_PROTOCOL`."""
    return FAMILY_PROTOCOLS.get(family, DEFAULT_PROTOCOL)


#: Streams read as whole per-utterance sequences (``input: streams``).
SEQUENCE_STREAMS = ("text", "audio", "video")


class ProtocolError(EmotkError):
    """A protocol name is unknown or a protocol file is malformed."""


_NUM = (int, float)
_OPT = object()  # marks an optional key without default (absent unless given)

# key → (accepted types or a tuple of choices wrapped in a set, default); REQUIRED has no default
REQUIRED = object()
TOP = {
    "name": (str, None), "description": (str, ""), "input": ({"frames", "crops", "image", "streams"}, "frames"),
    "inputs": (dict, {}), "lengths": (dict, {}), "metric": ((str, type(None)), None),
    "encoder": (dict, None), "seq_len": ((int, type(None)), None), "frame_stride": (int, 1),
    "select_on": ({"val", "heldout", "last"}, "val"), "select_by": ({"metric", "loss"}, "metric"),
    "val_fraction": (_NUM, 0.1),
    "stages": (list, REQUIRED), "datasets": (dict, {}),
}
ENCODER = {"name": (str, "regnet_y_400mf"), "weights": (str, "imagenet"), "image_size": (int, 112),
           "channels_last": (bool, True), "checkpointing": (bool, False)}
STAGE = {
    "name": (str, None), "epochs": (int, REQUIRED), "batch_size": (int, 16), "optimizer": (dict, {}),
    "groups": (dict, {}), "schedule": (dict, {}), "early_stopping": ((dict, type(None)), None),
    "freeze": (list, []), "augment": (list, []), "loss": (dict, {}),
}
OPTIMIZER = {"name": ({"adam", "adamw", "sgd"}, "adam"), "lr": (_NUM, 1e-3), "weight_decay": (_NUM, 0.0),
             "betas": (list, _OPT), "eps": (_NUM, _OPT), "momentum": (_NUM, _OPT), "nesterov": (bool, _OPT)}
SCHEDULE = {
    "name": ({"none", "cosine", "cosine_restarts", "step", "plateau"}, "cosine"), "per": ({"epoch", "step"}, "epoch"),
    "eta_min": (_NUM, _OPT), "eta_min_factor": (_NUM, _OPT), "t0": (int, _OPT), "t0_epochs": (_NUM, _OPT),
    "t_mult": (int, 1), "step_size": (int, _OPT), "gamma": (_NUM, 0.1), "factor": (_NUM, 0.1),
    "patience": (int, 10), "warmup_steps": (int, 0), "warmup_epochs": (_NUM, 0),
    "monitor": ({"metric", "loss"}, "metric"),
}
EARLY = {"patience": (int, REQUIRED), "min_delta": (_NUM, 0.0), "restore_best": (bool, True),
         "monitor": ({"metric", "loss"}, "metric")}
GROUP = {"lr": (_NUM, _OPT), "lr_scale": (_NUM, _OPT), "weight_decay": (_NUM, _OPT)}


def available() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def locate(name_or_path: str) -> Path:
    """The file of a shipped protocol name, or a user's path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ProtocolError(f"protocol file {path} does not exist. Shipped protocols: {', '.join(available())}.")
        return path
    shipped = PROTOCOL_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ProtocolError(f"unknown protocol {name_or_path!r}. Shipped protocols: {', '.join(available())} "
                            "(or pass the path of a YAML file; see docs/protocols.md).")
    return shipped


def load(name_or_path: str) -> tuple[dict, Path]:
    path = locate(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"cannot read protocol file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ProtocolError(f"protocol file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"protocol file {path} must hold a mapping of keys (name, stages, …).")
    data.setdefault("name", path.stem)
    return data, path


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON where it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_dotted(data: dict, key: str, value: Any, where: str) -> None:
    """``data["stages"][0]["epochs"] = value`` for ``key = "stages.0.epochs"``."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ProtocolError(f"{where}: {'.'.join(parts[:i + 1])!r}: the protocol has {len(node)} entries there.")
            node = node[int(part)]
        else:
            if not isinstance(node.get(part, {}), (dict, list)):
                raise ProtocolError(f"{where}: {'.'.join(parts[:i + 1])!r} is a value, not a section.")
            node = node.setdefault(part, [] if nxt.isdigit() else {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ProtocolError(f"{where}: {key!r}: the protocol has {len(node)} entries there.")
        node[int(last)] = value
    else:
        node[last] = value


def _check(section: dict, schema: dict, where: str) -> dict:
    if not isinstance(section, dict):
        raise ProtocolError(f"{where} must be a mapping, got {section!r}.")
    unknown = sorted(set(section) - set(schema))
    if unknown:
        raise ProtocolError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(schema)}.")
    out = {}
    for key, (kind, default) in schema.items():
        if key not in section or section[key] is None and default is not None and default is not REQUIRED:
            if default is REQUIRED:
                raise ProtocolError(f"{where}: {key!r} is required.")
            if default is not _OPT:
                out[key] = copy.deepcopy(default)
            continue
        value = section[key]
        if isinstance(kind, set):
            if value not in kind:
                raise ProtocolError(f"{where}.{key}: {value!r} is not one of {', '.join(sorted(kind))}.")
        else:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value, ok = float(value), True
            if not ok:
                names = "/".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise ProtocolError(f"{where}.{key}: expected {names}, got {value!r}.")
        out[key] = value
    return out


def _positive(value, where: str, minimum=1) -> None:
    if value < minimum:
        raise ProtocolError(f"{where} must be at least {minimum}, got {value!r}.")


def validate(data: dict, where: str) -> dict:
    """The protocol with every key checked and every default filled in."""
    from emotk.train.augment import check_augment  # the augmentation registry validates its own entries

    top = _check(data, TOP, where)
    top.pop("datasets")
    if top["input"] == "crops":
        top["encoder"] = _check(top.get("encoder") or {}, ENCODER, f"{where}: encoder")
        _positive(top["encoder"]["image_size"], f"{where}: encoder.image_size", 16)
    else:  # a frames run has no encoder to train (a crops protocol run on a cache keeps its stages)
        top["encoder"] = None
    for stream, cache in top["inputs"].items():
        if stream not in SEQUENCE_STREAMS or not isinstance(cache, str):
            raise ProtocolError(f"{where}: inputs maps the streams {', '.join(SEQUENCE_STREAMS)} to feature cache "
                                f"names; got {stream!r}: {cache!r}.")
    for stream, length in top["lengths"].items():
        if stream not in SEQUENCE_STREAMS or isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ProtocolError(f"{where}: lengths maps the streams {', '.join(SEQUENCE_STREAMS)} to positive "
                                f"integers; got {stream!r}: {length!r}.")
    if top["metric"] is not None:
        from emotk.metrics import METRICS

        if top["metric"] not in METRICS:
            raise ProtocolError(f"{where}: metric {top['metric']!r} is not a known metric; known: {', '.join(sorted(METRICS))}.")
    if top["seq_len"] is not None:
        _positive(top["seq_len"], f"{where}: seq_len")
    _positive(top["frame_stride"], f"{where}: frame_stride")
    if not 0 < top["val_fraction"] < 1:
        raise ProtocolError(f"{where}: val_fraction must be between 0 and 1, got {top['val_fraction']}.")
    if not top["stages"]:
        raise ProtocolError(f"{where}: 'stages' is empty; give at least one stage with its epochs.")
    stages = []
    for i, raw in enumerate(top["stages"]):
        w = f"{where}: stages.{i}"
        st = _check(raw, STAGE, w)
        st["name"] = st["name"] or f"stage{i + 1}"
        _positive(st["epochs"], f"{w}.epochs")
        _positive(st["batch_size"], f"{w}.batch_size")
        st["optimizer"] = _check(st["optimizer"], OPTIMIZER, f"{w}.optimizer")
        if st["optimizer"]["lr"] <= 0:
            raise ProtocolError(f"{w}.optimizer.lr must be positive, got {st['optimizer']['lr']}.")
        st["schedule"] = _check(st["schedule"], SCHEDULE, f"{w}.schedule")
        sch = st["schedule"]
        if sch["name"] == "cosine_restarts" and "t0" not in sch and "t0_epochs" not in sch:
            raise ProtocolError(f"{w}.schedule: cosine_restarts needs t0 (in {sch['per']}s) or t0_epochs.")
        if sch["name"] == "step" and "step_size" not in sch:
            raise ProtocolError(f"{w}.schedule: step needs step_size (in {sch['per']}s).")
        if sch["name"] == "plateau" and sch["per"] != "epoch":
            raise ProtocolError(f"{w}.schedule: plateau is stepped per epoch (on the selection part's metric or loss).")
        if st["early_stopping"] is not None:
            st["early_stopping"] = _check(st["early_stopping"], EARLY, f"{w}.early_stopping")
        st["groups"] = {str(k): _check(v, GROUP, f"{w}.groups.{k}") for k, v in st["groups"].items()}
        if not all(isinstance(m, str) for m in st["freeze"]):
            raise ProtocolError(f"{w}.freeze must list module names (strings).")
        st["augment"] = [check_augment(a, f"{w}.augment.{j}") for j, a in enumerate(st["augment"])]
        stages.append(st)
    top["stages"] = stages
    return top


def resolve(name_or_path: str, dataset: str, overrides: dict[str, Any] | None = None) -> dict:
    """Load, apply the dataset's and the user's dotted overrides, validate; the resolved protocol."""
    data, path = load(name_or_path)
    where = str(path) if path.parent != PROTOCOL_DIR else f"protocol {path.stem!r} ({path})"
    per_dataset = data.get("datasets") or {}
    if not isinstance(per_dataset, dict):
        raise ProtocolError(f"{where}: 'datasets' must map dataset names to overrides.")
    for key, value in (per_dataset.get(dataset) or {}).items():
        set_dotted(data, str(key), value, f"{where}: datasets.{dataset}")
    for key, value in (overrides or {}).items():
        if key.startswith("stages.*."):  # a CLI flag applying to every stage
            for i in range(len(data.get("stages") or [])):
                set_dotted(data, f"stages.{i}.{key[len('stages.*.'):]}", value, f"{where} (override {key})")
        else:
            set_dotted(data, key, value, f"{where} (override {key})")
    return validate(data, where)
