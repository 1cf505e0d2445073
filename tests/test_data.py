"""Data sources: the schema of the ``data`` key, corrupt images in image folders, the IDX
parser and Fashion-MNIST (the real files where Debian's dataset-fashion-mnist is installed)."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridmoo.data import (
    FASHION_MNIST_FILES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_PACKAGE,
    FASHION_MNIST_ROOT,
    FASHION_MNIST_STD,
    check_source,
    corrupt_images,
    epoch_batches,
    eval_batches,
    fashion_mnist,
    make_data,
    read_idx,
)
from hybridmoo.errors import ConfigError
from hybridmoo.supernet.train_config import TrainConfig

REAL = Path(FASHION_MNIST_ROOT)
needs_real = pytest.mark.skipif(
    not all((REAL / f"{name}.gz").is_file() for pair in FASHION_MNIST_FILES.values()
            for name in pair),
    reason=f"{REAL} is absent (apt-get install {FASHION_MNIST_PACKAGE}; CI installs it)")


# -- the data source schema

@pytest.mark.parametrize(("value", "canonical"), [
    ("digits", "digits"),
    ("fashion-mnist", "fashion-mnist"),
    ({"name": "fashion-mnist"}, "fashion-mnist"),
    ({"name": "digits"}, "digits"),
    ({"name": "fashion-mnist", "root": "raw"}, {"name": "fashion-mnist", "root": "raw"}),
    ({"root": "imgs"}, {"root": "imgs"}),
    ({"root": "imgs", "skip_corrupt": False}, {"root": "imgs"}),
    ({"root": "imgs", "skip_corrupt": True}, {"root": "imgs", "skip_corrupt": True}),
    ({"name": "torch/cifar10", "root": "c", "download": False}, {"name": "torch/cifar10",
                                                                 "root": "c"}),
    ({"name": "torch/cifar10", "root": "c", "download": True, "augment": False,
      "mean": [0.5, 0.4, 0.3], "std": 1},
     {"name": "torch/cifar10", "root": "c", "download": True, "augment": False,
      "mean": [0.5, 0.4, 0.3], "std": 1.0}),
    ({"name": "digits", "mean": 0, "std": 1, "augment": True},
     {"name": "digits", "mean": 0.0, "std": 1.0, "augment": True}),
    ({"root": "imgs", "augment": False, "mean": (0, 0, 0)},
     {"root": "imgs", "augment": False, "mean": [0.0, 0.0, 0.0]}),
])
def test_data_sources_have_one_canonical_form(value, canonical):
    assert check_source(value) == canonical


@pytest.mark.parametrize(("value", "message"), [
    ("fashion_mnist", "did you mean 'fashion-mnist'"),
    ("cifar10", "data must be 'digits' or 'fashion-mnist'"),
    (3, "data must be"),
    ({"roots": "x"}, "unknown key 'roots' (did you mean 'root'?)"),
    ({"root": 3}, "root must be a non-empty string"),
    ({"root": ""}, "root must be a non-empty string"),
    ({"root": "x", "skip_corrupt": "yes"}, "skip_corrupt must be true or false"),
    ({"skip_corrupt": True}, "needs 'root'"),
    ({"name": "mnist"}, "unknown name 'mnist'"),
    ({"name": "digits", "root": "x"}, "takes no root"),
    ({"name": "fashion-mnist", "skip_corrupt": True}, "skip_corrupt is for image folders"),
    ({"name": "digits", "mean": [0.5, 0.5, 0.5]}, "digits is grey: mean takes one number"),
    ({"root": "x", "std": 0}, "std must be a positive number or a list of 3"),
    ({"root": "x", "std": [1, 1, -1]}, "std must be a positive number"),
    ({"root": "x", "mean": [0.1, 0.2]}, "mean must be a number or a list of 3"),
    ({"root": "x", "mean": "0.5"}, "mean must be a number"),
    ({"root": "x", "mean": float("nan")}, "mean must be a number"),
    ({"root": "x", "augment": "yes"}, "augment must be true or false"),
    ({"root": "x", "download": True}, "download is for timm datasets"),
    ({"name": "torch/cifar10", "root": "x", "skip_corrupt": True},
     "skip_corrupt is for image folders"),
    ({"name": "torch/cifar10"}, "needs 'root' (the folder of torch/cifar10)"),
    ({"name": "wds/shards", "root": "x"}, "streaming timm dataset"),
    ({"name": "tv/cifar10", "root": "x"}, "unknown name 'tv/cifar10'"),
    ("torch/cifar10", "a timm dataset is a mapping"),
    ({"python": True, "sizes": [3, 2, 1], "fingerprint": "ab"}, "came from Python"),
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
    assert data({"name": "fashion-mnist", "root": "raw"}) == {
        "name": "fashion-mnist", "root": str(tmp_path / "raw")}
    assert data({"name": "fashion-mnist"}) == "fashion-mnist"


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


# -- IDX files and Fashion-MNIST

def write_idx(path: Path, array: np.ndarray) -> Path:
    """``array`` (uint8) as an IDX file, gzipped when ``path`` ends in .gz."""
    raw = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    raw += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def fake_fashion(root: Path, per_class: int = 10, gz: bool = True) -> None:
    """The four IDX files with ``per_class`` train and 2 test images per class."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", per_class), ("test", 2)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), n)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        suffix = ".gz" if gz else ""
        images_name, labels_name = FASHION_MNIST_FILES[split]
        write_idx(root / f"{images_name}{suffix}", images)
        write_idx(root / f"{labels_name}{suffix}", labels)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_round_trips(tmp_path, suffix):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / f"x-idx3-ubyte{suffix}", array))
    assert out.dtype == np.uint8 and np.array_equal(out, array)


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "magic missing"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "not an IDX file of unsigned bytes"),
    (b"\x00\x00\x08\x03\x00\x00", "header is cut short"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "need 5 bytes of data, the file holds 3"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "need 2 bytes"),
])
def test_a_corrupt_idx_file_is_a_clear_error(tmp_path, raw, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match="bad-idx1-ubyte") as info:
        read_idx(path)
    assert message in str(info.value)


def test_a_broken_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "t-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04abcd")[:-6])
    with pytest.raises(ConfigError, match="cannot read the IDX file"):
        read_idx(path)
    path.write_bytes(b"plainly not gzip")
    with pytest.raises(ConfigError, match="cannot read the IDX file"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_any_folder(tmp_path, gz):
    fake_fashion(tmp_path / "raw", gz=gz)
    data = make_data({"name": "fashion-mnist", "root": str(tmp_path / "raw")}, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 20)
    assert data.num_classes == 10 and data.in_chans == 3
    assert sorted(data.val.tensors[1].tolist()) == list(range(10))  # stratified: 1 per class
    x, y = next(epoch_batches(data.train, 8, seed=0, epoch=0))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x[:, 0], x[:, 2])
    again = fashion_mnist(32, tmp_path / "raw")
    assert torch.equal(again.val.tensors[0], data.val.tensors[0])  # a fixed split
    batch = next(eval_batches(data.test, 4))[0]
    assert batch.is_contiguous() and batch.shape == (4, 3, 32, 32)


def test_fashion_mnist_is_normalised_with_the_dataset_statistics(tmp_path):
    fake_fashion(tmp_path)
    data = fashion_mnist(28, tmp_path)
    x = data.test.tensors[0][:, 0].double()
    raw = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz").astype(np.float64) / 255
    expect = (raw - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert np.allclose(x.numpy(), expect, atol=1e-5)


def test_missing_fashion_mnist_files_name_the_package_and_root(tmp_path):
    (tmp_path / "notes.txt").write_text("no data here\n")
    with pytest.raises(ConfigError) as info:
        make_data({"name": "fashion-mnist", "root": str(tmp_path)}, 32)
    message = str(info.value)
    assert "\n" not in message and "train-images-idx3-ubyte" in message
    assert f"apt-get install {FASHION_MNIST_PACKAGE}" in message and "root:" in message


@needs_real
def test_real_fashion_mnist_pixels_have_the_published_statistics():
    pixels = read_idx(REAL / "train-images-idx3-ubyte.gz")
    labels = read_idx(REAL / "train-labels-idx1-ubyte.gz")
    assert pixels.shape == (60_000, 28, 28) and np.bincount(labels).tolist() == [6000] * 10
    assert abs(pixels.mean() / 255 - FASHION_MNIST_MEAN) < 1e-5
    assert abs(pixels.std(dtype=np.float64) / 255 - FASHION_MNIST_STD) < 1e-5
    assert read_idx(REAL / "t10k-images-idx3-ubyte.gz").shape == (10_000, 28, 28)


@needs_real
def test_real_fashion_mnist_splits():
    data = make_data("fashion-mnist", 28)
    assert (len(data.train), len(data.val), len(data.test)) == (54_000, 6_000, 10_000)
    assert torch.bincount(data.val.tensors[1]).tolist() == [600] * 10
    assert torch.bincount(data.test.tensors[1]).tolist() == [1000] * 10
    x = data.train.tensors[0]
    assert x.shape == (54_000, 3, 28, 28) and x.stride(1) == 0  # one channel held, 3 shown
    assert abs(float(x[:, 0].mean())) < 0.01 and abs(float(x[:, 0].std()) - 1) < 0.01


# -- normalisation and augmentation

def test_mean_and_std_normalise_every_source(tmp_path):
    default = make_data("digits", 32).val.tensors[0]
    raw = make_data({"name": "digits", "mean": 0, "std": 1}, 32).val.tensors[0]
    assert torch.allclose(raw, default * 0.5 + 0.5, atol=1e-6)  # the default: mean 0.5, std 0.5
    fake_fashion(tmp_path / "raw")
    data = make_data({"name": "fashion-mnist", "root": str(tmp_path / "raw"), "mean": 0.5,
                      "std": 0.25}, 28)
    pixels = read_idx(tmp_path / "raw" / "t10k-images-idx3-ubyte.gz").astype(np.float64) / 255
    assert np.allclose(data.test.tensors[0][:, 0].double().numpy(), (pixels - 0.5) / 0.25,
                       atol=1e-5)
    _folder(tmp_path / "imgs")
    folder = {"root": str(tmp_path / "imgs"), "skip_corrupt": True}
    x, _ = make_data({**folder, "mean": [0, 0, 0], "std": 1}, 16).val[0]  # val/a/0.png
    assert torch.allclose(x[:, 0, 0], torch.tensor([0, 90, 200]) / 255, atol=1e-6)
    x, _ = make_data({**folder, "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 2]}, 16).val[0]
    expect = (torch.tensor([0, 90, 200]) / 255 - torch.tensor([0.1, 0.2, 0.3])) / torch.tensor(
        [0.5, 0.5, 2])
    assert torch.allclose(x[:, 0, 0], expect, atol=1e-6)
    x, _ = make_data(folder, 16).val[0]  # timm's ImageNet statistics by default
    imagenet = (torch.tensor([0, 90, 200]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / (
        torch.tensor([0.229, 0.224, 0.225]))
    assert torch.allclose(x[:, 0, 0], imagenet, atol=1e-5)


def _noise_folder(root: Path, per_class: int = 10) -> Path:
    """train/ and val/ with classes a, b of random-noise PNGs (crops and flips show)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 3)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png")
    return root


def test_an_image_folder_trains_on_timms_augmentation_and_evaluates_without(tmp_path):
    from hybridmoo.supernet.training import calibration_batches

    data = make_data({"root": str(_noise_folder(tmp_path))}, 24)
    steps = [type(t).__name__ for t in data.train.transform.transforms]
    assert "RandomResizedCropAndInterpolation" in steps and "RandomHorizontalFlip" in steps
    assert not any("Random" in type(t).__name__ for t in data.calib.transform.transforms)
    assert data.calib.transform is data.val.transform
    torch.manual_seed(0)
    assert not torch.equal(data.train[0][0], data.train[0][0])  # drawn anew at each read
    assert torch.equal(data.calib[0][0], data.calib[0][0]) and data.calib[0][1] == 0
    first, again = (calibration_batches(data, 4, 0, 2) for _ in range(2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    plain = make_data({"root": str(tmp_path), "augment": False}, 24)
    assert plain.calib is None and plain.calibration_set() is plain.train
    assert torch.equal(plain.train[0][0], data.calib[0][0])


def _crop_offset(image: torch.Tensor, padded: torch.Tensor, pad: int) -> tuple[int, int] | None:
    h, w = image.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(padded[:, dy:dy + h, dx:dx + w], image):
                return dy, dx
    return None


def test_built_in_augmentation_is_seeded_random_crops(tmp_path):
    from hybridmoo.data import AugmentedTensors

    plain, data = make_data("digits", 32), make_data({"name": "digits", "augment": True}, 32)
    assert isinstance(data.train, AugmentedTensors) and data.train.pad == 4
    assert not data.train.flip and data.calib is not None
    assert torch.equal(data.calib.tensors[0], plain.train.tensors[0])
    epoch = list(epoch_batches(data.train, 64, seed=0, epoch=1))
    resumed = list(epoch_batches(data.train, 64, seed=0, epoch=1, skip=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch[3:], resumed, strict=True))
    unaugmented = list(epoch_batches(plain.train, 64, seed=0, epoch=1))
    x, y = epoch[0]
    assert torch.equal(y, unaugmented[0][1]) and not torch.equal(x, unaugmented[0][0])
    padded = torch.nn.functional.pad(unaugmented[0][0], (4, 4, 4, 4), value=-1.0)  # black
    offsets = [_crop_offset(x[k], padded[k], 4) for k in range(len(x))]
    assert None not in offsets and len(set(offsets)) > 5  # crops at many places, no flips
    fake_fashion(tmp_path, per_class=8)
    fashion = make_data({"name": "fashion-mnist", "root": str(tmp_path), "augment": True}, 28)
    assert fashion.train.flip
    x, _ = next(epoch_batches(fashion.train, 32, seed=0, epoch=0))
    source, _ = next(epoch_batches(fashion.calib, 32, seed=0, epoch=0))
    fill = -FASHION_MNIST_MEAN / FASHION_MNIST_STD
    padded = torch.nn.functional.pad(source, (4, 4, 4, 4), value=fill)
    flipped = [_crop_offset(x[k], padded[k], 4) is None for k in range(len(x))]
    assert all(_crop_offset(x[k].flip(-1), padded[k], 4) is not None
               for k in range(len(x)) if flipped[k])
    assert 0 < sum(flipped) < len(x)


def test_a_timm_dataset_by_name(tmp_path):
    """torch/image_folder (torchvision's ImageFolder through timm's factory) offline: the
    training split less a fixed 10 % per class is train, that 10 % val, timm's validation
    split test."""
    root = _noise_folder(tmp_path / "imgs", per_class=20)
    data = make_data({"name": "torch/image_folder", "root": str(root)}, 16)
    assert (len(data.train), len(data.val), len(data.test), data.num_classes) == (36, 4, 6, 2)
    assert sorted(data.val[i][1] for i in range(4)) == [0, 0, 1, 1]  # stratified
    again = make_data({"name": "torch/image_folder", "root": str(root), "augment": False}, 16)
    assert again.val.base.indices == data.val.base.indices  # a fixed split
    assert again.calib is None and data.calib is not None
    x, y = next(epoch_batches(data.train, 8, seed=0, epoch=0))
    assert x.shape == (8, 3, 16, 16) and y.dtype == torch.long
    with pytest.raises(ConfigError, match=r"torch/cifar10.*cannot make its train split.*"
                                          r"download: true"):
        make_data({"name": "torch/cifar10", "root": str(tmp_path / "empty")}, 32)


# -- data from Python

class Examples(torch.utils.data.Dataset):
    """A map-style dataset of the given examples (no class metadata)."""

    def __init__(self, examples):
        self.examples = list(examples)

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        return self.examples[index]


def test_python_datasets_become_image_data():
    from hybridmoo.data import ImageData, as_image_data

    digits = make_data("digits", 32)
    data = as_image_data((digits.train, digits.val, digits.test), image_size=32)
    assert isinstance(data, ImageData) and data.num_classes == 10
    assert data.train is digits.train and data.test is digits.test and data.calib is None
    loader = torch.utils.data.DataLoader(digits.train, batch_size=7, shuffle=True)
    data = as_image_data({"train": loader, "val": digits.val})
    assert data.train is digits.train and data.test is data.val  # no test: val doubles
    custom = Examples((x, int(y)) for x, y in zip(*digits.val.tensors, strict=True))
    with pytest.raises(ConfigError, match=r"cannot tell the number of classes.*num_classes"):
        as_image_data((custom, custom))
    assert as_image_data((custom, custom), num_classes=12).num_classes == 12
    assert as_image_data(digits).num_classes == 10


def _examples(example, n=3):
    return Examples([example] * n)


IMAGE = torch.zeros(3, 32, 32)


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield IMAGE, 1


@pytest.mark.parametrize(("value", "message"), [
    (_examples(IMAGE), "data must be an ImageData"),
    ((_examples((IMAGE, 1)),), "data must be an ImageData, a mapping"),
    ({"train": _examples((IMAGE, 1)), "valid": _examples((IMAGE, 1))}, "unknown split 'valid'"),
    ({"train": _examples((IMAGE, 1))}, "no val split"),
    ((_examples((IMAGE,)), _examples((IMAGE, 1))), "train split: examples must be (image, label)"),
    ((_examples((IMAGE, 1)), _examples((torch.zeros(32, 32), 1))), "val split: an image must be "
                                                                  "a C x H x W tensor"),
    ((_examples((IMAGE.to(torch.uint8), 1)), _examples((IMAGE, 1))), "must be float32"),
    ((_examples((torch.zeros(1, 32, 32), 1)),) * 2, "1 channel, the model takes 3"),
    ((_examples((torch.zeros(3, 16, 16), 1)),) * 2, "images are 16x16 but image_size is 32: "
                                                    "set image_size: 16"),
    ((_examples((IMAGE, 1.0)),) * 2, "labels must be ints"),
    ((_examples((IMAGE, torch.tensor([1]))),) * 2, "labels must be ints or int64"),
    ((_examples((IMAGE, 12)),) * 2, "label 12 lies outside 0..9"),
    ((torch.utils.data.TensorDataset(torch.zeros(4, 3, 32, 32), torch.tensor([0, 1, 2, 3],
                                     dtype=torch.int32)),) * 2, "int64"),
    ((torch.utils.data.TensorDataset(torch.zeros(2, 3, 32, 32), torch.tensor([0, -1])),) * 2,
     "label -1 lies outside"),
    ((_examples((IMAGE, 1)), Examples([])), "val split is empty"),
    ((_examples((IMAGE, 1)), Stream()), "must be a map-style Dataset"),
    ((_examples((IMAGE, 1)), Examples([None])), "val split: examples must be"),
])
def test_bad_python_data_is_a_clear_error(value, message):
    from hybridmoo.data import as_image_data

    with pytest.raises(ConfigError, match=r"^data") as info:
        as_image_data(value, num_classes=10, image_size=32)
    assert message in str(info.value)


def test_an_unreadable_example_is_a_clear_error():
    from hybridmoo.data import as_image_data

    class Broken(Examples):
        def __getitem__(self, index):
            raise FileNotFoundError("images/0.png")

    with pytest.raises(ConfigError, match=r"train split: its first example cannot be read: "
                                          r"FileNotFoundError: images/0\.png"):
        as_image_data((Broken([1]), Broken([1])), num_classes=2)


def test_python_data_is_recorded_by_sizes_and_fingerprint():
    import json

    from hybridmoo.data import ImageData, data_record

    digits = make_data("digits", 32)
    record = data_record(digits)
    assert record == json.loads(json.dumps(record)) and record["python"] is True
    assert record["sizes"] == [1078, 359, 360]
    assert data_record(make_data("digits", 32)) == record  # the same data: the same record
    augmented = make_data({"name": "digits", "augment": True}, 32)
    assert data_record(augmented) == record  # training images drawn at random do not count
    x, y = digits.val.tensors
    changed = ImageData(digits.train, torch.utils.data.TensorDataset(x + 0.01, y), digits.test,
                        10)
    assert data_record(changed)["fingerprint"] != record["fingerprint"]
    with pytest.raises(ConfigError, match=r"came from Python \(train / val / test: 1078 / 359 / "
                                          r"360 examples.*pass the same data again"):
        make_data(record, 32)
