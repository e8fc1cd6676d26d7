"""The papers' printed results, attached to the model presets they belong to, so that ``emotk report``
prints them beside ours (its Paper column; :func:`emotk.models.published`).

Each entry says how the paper measured its figure (split, metric, aggregation): a reader compares a
row with the paper only when the protocols agree, and the report prints that sentence under its table.
The FER CNNs carry Miskow's figures in their own presets (:mod:`emotk.models.cnn`).
"""

from __future__ import annotations

from emotk.models.registry import PRESETS

# Mehta & Yang (ICVIP 2023), NAC-TCN, Tables 1–3: model → figure per dataset (the recipes' READMEs too)
NACTCN_TABLES = {
    "affwild2": ("ccc", "Mehta & Yang 2023, Table 1: trained on Aff-Wild2's official Train_Set, CCC on its "
                        "Validation_Set (mean of valence and arousal)"),
    "emoreact": ("auc", "Mehta & Yang 2023, Table 2: EmoReact's official split, AUC-ROC macro over the 8 labels"),
    "afewva": ("acc", "Mehta & Yang 2023, Table 3: AFEW-VA mood accuracy, mean over subject folds"),
}
NACTCN_RESULTS = {  # (model, size): {dataset: figure}
    ("attn", "sm"): {"affwild2": 0.20, "emoreact": 0.56, "afewva": 0.43},
    ("tcn", "sm"): {"affwild2": 0.41, "emoreact": 0.79, "afewva": 0.74},
    ("gru", "sm"): {"affwild2": 0.42, "emoreact": 0.74, "afewva": 0.75},
    ("lstm", "sm"): {"affwild2": 0.42, "emoreact": 0.75, "afewva": 0.75},
    ("gru_attn", "sm"): {"affwild2": 0.44, "emoreact": 0.76, "afewva": 0.76},
    ("lstm_attn", "sm"): {"affwild2": 0.44, "emoreact": 0.76, "afewva": 0.75},
    ("tcan", "sm"): {"affwild2": 0.46, "emoreact": 0.84, "afewva": 0.75},
    ("transformer", "sm"): {"affwild2": 0.48},
    ("nactcn", "sm"): {"affwild2": 0.48, "emoreact": 0.86, "afewva": 0.75},
    ("nactcn", "lg"): {"affwild2": 0.52, "emoreact": 0.78, "afewva": 0.76},
}


def attach(results: dict, tables: dict) -> None:
    """Put ``results`` into the presets' ``extra["published"]`` (the dataset's own preset, else the
    model's generic one) with the protocol sentence of ``tables``."""
    for (model, size), figures in results.items():
        for dataset, value in figures.items():
            preset = PRESETS.get((model, size, dataset)) or PRESETS[(model, size, None)]
            metric, protocol = tables[dataset]
            preset.extra.setdefault("published", {}).setdefault(dataset, {})[metric] = value
            preset.extra.setdefault("published_protocol", {})[dataset] = protocol


attach(NACTCN_RESULTS, NACTCN_TABLES)
