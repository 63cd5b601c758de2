"""The stage of workflow/rules/data.smk: the prepared splits and their card (rule prepare_data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import block_defaults, load_config
from ..data import HALVES, load_split, split_heldout
from ..io import BadInputError, save_images, write_json


def prepare_data(data_cfg: dict, out_dir) -> dict:
    """The prepare_data stage: train.npz, the held-out split's two halves validation.npz and test.npz (each with
    `index`, its rows in the held-out split) and data_card.json under out_dir."""
    out_dir = Path(out_dir)
    train = load_split(data_cfg, "train")
    save_images(out_dir / "train.npz", train["images"], **_labels(train))
    held = load_split(data_cfg, "heldout")
    halves = split_heldout(len(held["images"]), held["labels"], data_cfg["validation_fraction"],
                           data_cfg["split_seed"])
    cards = {"train": train["card"], "heldout": held["card"]}
    for half in HALVES:
        idx = halves[half]
        labels = None if held["labels"] is None else held["labels"][idx]
        save_images(out_dir / f"{half}.npz", held["images"][idx], index=idx,
                    **({} if labels is None else {"labels": labels}))
        cards[half] = {"of": "heldout", "count": int(len(idx)), "split_seed": data_cfg["split_seed"],
                       "class_counts": None if labels is None else np.bincount(labels).tolist()}
    write_json(out_dir / "data_card.json", cards)
    return cards


def prepare_data_job(*, out: str, data: dict | None = None, config: str | None = None) -> None:
    """The prepare_data rule: the splits of --data (the data: block as JSON; keys it leaves out get the schema's
    defaults, as in an experiment) or of --config's data: block (an experiment YAML), one of the two."""
    if (data is None) == (config is None):
        raise BadInputError("give --data (the data: block as JSON) or --config (an experiment YAML), one of them")
    prepare_data(block_defaults("data") | data if data is not None else load_config(config)["data"], out)


def _labels(d):
    return {} if d["labels"] is None else {"labels": d["labels"]}
