"""Data sources: the schema of the ``data`` key and corrupt images in image folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridmoo.data import check_source, corrupt_images, epoch_batches, eval_batches, make_data
from hybridmoo.errors import ConfigError
from hybridmoo.supernet.train_config import TrainConfig

# -- the data source schema

@pytest.mark.parametrize(("value", "canonical"), [
    ("digits", "digits"),
    ({"root": "imgs"}, {"root": "imgs"}),
    ({"root": "imgs", "skip_corrupt": False}, {"root": "imgs"}),
    ({"root": "imgs", "skip_corrupt": True}, {"root": "imgs", "skip_corrupt": True}),
])
def test_data_sources_have_one_canonical_form(value, canonical):
    assert check_source(value) == canonical


@pytest.mark.parametrize(("value", "message"), [
    ("cifar10", "data must be 'digits' or"),
    (3, "data must be"),
    ({"roots": "x"}, "unknown key 'roots' (did you mean 'root'?)"),
    ({"root": 3}, "root must be a non-empty string"),
    ({"root": ""}, "root must be a non-empty string"),
    ({"root": "x", "skip_corrupt": "yes"}, "skip_corrupt must be true or false"),
    ({"skip_corrupt": True}, "needs 'root'"),
])
def test_bad_data_sources_are_config_errors(value, message):
    with pytest.raises(ConfigError, match=r"^data") as info:
        check_source(value)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match=r"train\.yaml: data"):
        TrainConfig.from_dict({"data": value}, source="train.yaml")


def test_train_config_takes_roots_from_the_yaml_folder(tmp_path):
    def data(value):
        return TrainConfig.from_dict({"data": value}, base_dir=tmp_path).data

    assert data({"root": "imgs", "skip_corrupt": True}) == {
        "root": str(tmp_path / "imgs"), "skip_corrupt": True}


# -- corrupt images in an image folder

def _folder(root: Path) -> dict[str, Path]:
    """train/ and val/ with classes a, b of 3 real PNGs each; val/a/1.png truncated (fails
    only when decoded) and train/b/junk.png not an image at all."""
    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 24), (40 * i, 90, 200)).save(folder / f"{i}.png")
    truncated, junk = root / "val" / "a" / "1.png", root / "train" / "b" / "junk.png"
    data = truncated.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    junk.write_bytes(b"not a png")
    with Image.open(truncated) as image:  # the header still reads: only decoding fails
        assert image.size == (20, 24)
    return {"truncated": truncated, "junk": junk}


def test_corrupt_images_are_found_by_decoding_them(tmp_path):
    bad = _folder(tmp_path)
    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
                    ).save(jpeg)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg.read_bytes()[:600])
    good = tmp_path / "train" / "a" / "0.png"
    found = corrupt_images([good, bad["truncated"], jpeg, bad["junk"], cut])
    assert [p for p, _ in found] == [bad["truncated"], bad["junk"], cut]
    assert "truncated" in found[0][1] and "not an image" in found[1][1]
    assert corrupt_images([good, jpeg], threads=1) == []


def test_a_corrupt_image_is_an_error_naming_it(tmp_path):
    _folder(tmp_path)
    with pytest.raises(ConfigError) as info:
        make_data({"root": str(tmp_path)}, 32)
    message = str(info.value)
    assert "\n" not in message and "2 corrupt or unreadable images" in message
    assert "val/a/1.png (image file is truncated)" in message
    assert "train/b/junk.png" in message and "skip_corrupt: true" in message


def test_many_corrupt_images_name_the_first_few_and_the_count(tmp_path):
    _folder(tmp_path)
    for i in range(5):
        (tmp_path / "train" / "a" / f"bad{i}.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"7 corrupt or unreadable images: .*; and 4 more"):
        make_data({"root": str(tmp_path)}, 32)


def test_skip_corrupt_leaves_them_out_and_timm_substitutes_nothing(tmp_path, caplog):
    _folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        data = make_data({"root": str(tmp_path), "skip_corrupt": True}, 32)
    assert "left out 2 corrupt or unreadable images" in caplog.text
    assert len(data.train) == 6 and len(data.val) == 5 and data.test is data.val
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        seen = sum(len(y) for _, y in eval_batches(data.val, 2))
        x, _ = next(epoch_batches(data.train, 6, seed=0, epoch=0))
    assert seen == 5 and x.shape == (6, 3, 32, 32)
    assert "Skipped sample" not in caplog.text  # timm's substitution warning


def test_a_clean_folder_is_used_whole(tmp_path):
    _folder(tmp_path)
    (tmp_path / "train" / "b" / "junk.png").unlink()
    (tmp_path / "val" / "a" / "1.png").unlink()
    data = make_data({"root": str(tmp_path)}, 16)
    assert (len(data.train), len(data.val), data.num_classes) == (6, 5, 2)
