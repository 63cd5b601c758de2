"""The stage of workflow/rules/data.smk: the prepared splits and their card (rule prepare_data)."""

from __future__ import annotations

from pathlib import Path

from ..data import SPLITS, load_split
from ..io import save_images, write_json


def prepare_data(data_cfg: dict, out_dir) -> dict:
    """The prepare_data stage: write train.npz, heldout.npz and data_card.json under out_dir."""
    out_dir = Path(out_dir)
    cards = {}
    for split in SPLITS:
        d = load_split(data_cfg, split)
        extra = {} if d["labels"] is None else {"labels": d["labels"]}
        save_images(out_dir / f"{split}.npz", d["images"], **extra)
        cards[split] = d["card"]
    write_json(out_dir / "data_card.json", cards)
    return cards
