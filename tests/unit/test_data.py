import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from advkd import data
from advkd.config import block_defaults
from advkd.io import BadInputError
from advkd.stages.data import prepare_data


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_fmnist(root, n=20):
    rng = np.random.default_rng(0)
    for split, (img, lab) in data.FASHION_MNIST_FILES.items():
        _write_idx(root / img, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / lab, rng.integers(0, 10, (n,)))


def test_idx_roundtrip_and_padding(tmp_path):
    _fake_fmnist(tmp_path)
    d = data.load_split({"dataset": "fashion-mnist", "root": str(tmp_path), "resolution": 32, "channels": 1}, "train")
    raw = data.read_idx_gz(tmp_path / "train-images-idx3-ubyte.gz")
    assert d["images"].shape == (20, 32, 32, 1) and d["images"].dtype == np.uint8
    # zero padding keeps every original pixel
    np.testing.assert_array_equal(d["images"][:, 2:30, 2:30, 0], raw)
    assert d["images"][:, :2].max() == 0
    assert set(d["card"]["input_sha256"]) == {str(tmp_path / n) for n in data.FASHION_MNIST_FILES["train"]}


def test_truncated_idx_names_the_file(tmp_path):
    _fake_fmnist(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    with gzip.open(p, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(BadInputError, match="train-images-idx3-ubyte.gz.*truncated"):
        data.read_idx_gz(p)


def test_non_idx_and_non_gzip_files_are_named(tmp_path):
    p = tmp_path / "x.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"hello world, not idx")
    with pytest.raises(BadInputError, match="x.gz.*magic"):
        data.read_idx_gz(p)
    q = tmp_path / "y.gz"
    q.write_bytes(b"plain text")
    with pytest.raises(BadInputError, match="y.gz.*gzip"):
        data.read_idx_gz(q)


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "nope"))
    with pytest.raises(BadInputError, match="apt-get install -y dataset-fashion-mnist"):
        data.load_fashion_mnist("train")
    with pytest.raises(BadInputError, match="data.root"):
        data.load_fashion_mnist("train", root=tmp_path)


def test_digits_splits_are_disjoint_and_fixed():
    cfg = {"dataset": "digits", "resolution": 8, "channels": 1}
    tr, he = data.load_split(cfg, "train"), data.load_split(cfg, "heldout")
    assert len(tr["images"]) + len(he["images"]) == 1797
    assert tr["images"].max() == 255 and tr["images"].dtype == np.uint8
    again = data.load_split(cfg, "heldout")
    np.testing.assert_array_equal(he["images"], again["images"])
    flat = {im.tobytes() for im in tr["images"]}
    # a handful of digits are exact duplicates in the data set itself; the split must not copy images across
    assert sum(im.tobytes() in flat for im in he["images"]) < 5


def test_image_folder_skips_and_names_bad_files(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    cfg = block_defaults("data") | {"dataset": "image-folder", "root": str(tmp_path), "resolution": 16, "channels": 3,
                                    "heldout_fraction": 0.2}
    tr, he = data.load_split(cfg, "train"), data.load_split(cfg, "heldout")
    assert tr["images"].shape == (8, 16, 16, 3) and he["images"].shape == (2, 16, 16, 3)
    skipped = "\n".join(tr["card"]["skipped_files"])
    for name in ("notes.txt", "broken.jpg", "small.png"):
        assert name in skipped
    assert "small.png" in caplog.text


def test_empty_image_folder_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(BadInputError, match="no readable image"):
        data.load_split(block_defaults("data") | {"dataset": "image-folder", "root": str(tmp_path), "resolution": 8,
                                                  "channels": 3}, "train")


def test_float_view_and_back():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    f = data.to_float(x)
    assert f.shape == (1, 1, 16, 16) and f.min() == -1 and f.max() == 1
    np.testing.assert_array_equal(data.to_uint8(f), x)


def test_prepare_writes_splits_and_card(tmp_path):
    cards = prepare_data({"dataset": "digits", "resolution": 8, "channels": 1, "train_count": 100,
                          "validation_fraction": 0.5, "split_seed": 0}, tmp_path)
    assert cards["train"]["count"] == 100
    from advkd.io import load_images, read_json
    assert load_images(tmp_path / "train.npz").shape == (100, 8, 8, 1)
    card = read_json(tmp_path / "data_card.json")
    assert card["heldout"]["count"] == 359 and card["validation"]["count"] + card["test"]["count"] == 359


def test_validation_and_test_halves_are_disjoint_stratified_and_seeded(tmp_path):
    """Recipes are chosen on the validation half, tables report the test half: no image in both, every class
    split in the same proportion, the same halves for the same seed."""
    labels = np.repeat(np.arange(10), [100, 90, 80, 70, 60, 50, 40, 30, 20, 11])
    a = data.split_heldout(len(labels), labels, 0.5, seed=0)
    assert not set(a["validation"]) & set(a["test"])
    assert sorted([*a["validation"], *a["test"]]) == list(range(len(labels)))
    per_class = np.bincount(labels[a["validation"]], minlength=10)
    assert np.all(np.abs(per_class - 0.5 * np.bincount(labels)) <= 0.5)   # each class halved, to the image
    b = data.split_heldout(len(labels), labels, 0.5, seed=0)
    c = data.split_heldout(len(labels), labels, 0.5, seed=1)
    assert np.array_equal(a["test"], b["test"]) and not np.array_equal(a["test"], c["test"])
    prepare_data({"dataset": "digits", "resolution": 8, "channels": 1, "validation_fraction": 0.5,
                  "split_seed": 3}, tmp_path)
    with np.load(tmp_path / "test.npz", allow_pickle=False) as z:   # each half knows its rows in the held-out split
        assert z["images"].shape[0] == len(z["index"]) == len(z["labels"])


@pytest.mark.skipif(not (data.Path(data.FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    d = data.load_split({"dataset": "fashion-mnist", "resolution": 32, "channels": 1}, "heldout")
    assert d["images"].shape == (10000, 32, 32, 1)
    assert np.bincount(d["labels"]).tolist() == [1000] * 10
