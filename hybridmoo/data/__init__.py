"""Image data for supernet training and evaluation. A data source (the ``data`` key of a
training or pipeline config) is one of:

- ``"digits"`` (the built-in default): scikit-learn's bundled ``load_digits`` (1,797 8x8 grey
  images, 10 classes), split once into fixed stratified train / val / test parts (60 / 20 /
  20 %, seed 0), upsampled (bilinear) to ``image_size``, repeated to 3 channels and normalised
  with mean 0.5, std 0.5 (to [-1, 1]). Held in memory as tensors.
- ``"fashion-mnist"`` or ``{name: fashion-mnist, root: folder}``: Fashion-MNIST (70,000 28x28
  grey images, 10 classes) read from the four IDX files (``.gz`` or not) in ``root``, by
  default ``/usr/share/datasets/fashion-mnist`` (Debian's package ``dataset-fashion-mnist``;
  torchvision's ``FashionMNIST/raw`` folder works too). The 60,000 training images are split
  once into train / val (54,000 / 6,000, 600 per class, seed 0); test is the 10,000 t10k
  images. Resized (bilinear) to ``image_size``, normalised with the dataset's mean / std and
  held in memory as 3-channel tensors (see :func:`fashion_mnist`).
- ``{root: folder}``: an image folder read with timm's dataset factory (``train`` and
  ``val`` / ``validation`` sub-folders, one folder per class; ``test`` when present, else the
  validation part). Every image is decoded once when the data is made: a corrupt or unreadable
  one is a :class:`ConfigError` naming it, or, with ``skip_corrupt: true``, left out with a
  logged warning (timm would otherwise silently substitute another image).
- ``{name: torch/cifar10, root: folder, download: false}``: a map-style dataset of timm's
  factory (``timm.data.create_dataset``): ``torch/`` names (torchvision's cifar10, cifar100,
  mnist, kmnist, fashion_mnist, qmnist, places365, inaturalist, imagenet, image_folder) and
  ``hfds/`` (Hugging Face datasets); the streaming kinds (``hfids/``, ``tfds/``, ``wds/``) give
  no random access and are refused. Its ``train`` split is split once into train / val (10 %
  per class when the dataset lists its labels, else 10 % at random; seed 0) and its
  ``validation`` split (torchvision's test set) is test. ``download: true`` lets timm download
  into ``root``; by default the files must be there.

Every source also takes ``mean`` / ``std`` (the normalisation: one number, or three for the
RGB channels of folders and timm datasets; the built-ins are grey and take one number;
default: the dataset's own, timm's ImageNet mean / std for folders and timm datasets) and
``augment`` (training augmentation). Folders and timm datasets augment by default with timm's
training transform (``create_transform(is_training=True)``: random resized crop, horizontal
flip, colour jitter), the built-ins do not (``augment: true`` crops at random from the image
padded by 1/8 of its size, and flips Fashion-MNIST horizontally; digits are not flipped).
Evaluation, and the BatchNorm / activation calibration of evaluated and exported sub-networks
(:attr:`ImageData.calib`), see the evaluation transform. Built-in augmentation is seeded by
``(seed, epoch, batch)``, so a resumed run sees the same images; timm's transforms draw from
torch's global random state.

Data can also come from Python (:func:`as_image_data`): an :class:`ImageData`, or train / val
/ test ``Dataset``\\ s (or ``DataLoader``\\ s, whose ``.dataset`` is used). A run directory
records such data by :func:`data_record` (sizes and a fingerprint), not by name: resuming or
exporting that run needs the same data passed again.

Batches come in an order fixed by ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from hybridmoo.data.batches import AugmentedTensors, batches_per_epoch, epoch_batches, eval_batches
from hybridmoo.data.builtin import (
    CROP_PAD_FRACTION,
    DIGITS_MEAN,
    DIGITS_STD,
    FASHION_MNIST_FILES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_PACKAGE,
    FASHION_MNIST_ROOT,
    FASHION_MNIST_STD,
    FASHION_MNIST_VAL_FRACTION,
    FRACTIONS,
    digits,
    fashion_mnist,
    read_idx,
)
from hybridmoo.data.folders import (
    SHOWN_CORRUPT,
    TIMM_VAL_FRACTION,
    Transformed,
    corrupt_images,
    image_folder,
    log,
    timm_dataset,
    timm_transforms,
)
from hybridmoo.data.python import (
    FINGERPRINT_EXAMPLES,
    PYTHON_DATA_HELP,
    SPLIT_NAMES,
    as_image_data,
    check_resumed_source,
    data_record,
    is_python_record,
    python_data_message,
)
from hybridmoo.data.sources import (
    BUILTIN,
    SOURCE_HELP,
    SOURCE_OPTIONS,
    TIMM_PREFIXES,
    TIMM_STREAMING,
    check_source,
    make_data,
)
from hybridmoo.data.splits import SPLIT_SEED, ImageData, class_count

__all__ = [
    "BUILTIN", "CROP_PAD_FRACTION", "DIGITS_MEAN", "DIGITS_STD", "FASHION_MNIST_FILES",
    "FASHION_MNIST_MEAN", "FASHION_MNIST_PACKAGE", "FASHION_MNIST_ROOT", "FASHION_MNIST_STD",
    "FASHION_MNIST_VAL_FRACTION", "FINGERPRINT_EXAMPLES", "FRACTIONS", "PYTHON_DATA_HELP",
    "SHOWN_CORRUPT", "SOURCE_HELP", "SOURCE_OPTIONS", "SPLIT_NAMES", "SPLIT_SEED",
    "TIMM_PREFIXES", "TIMM_STREAMING", "TIMM_VAL_FRACTION", "AugmentedTensors", "ImageData",
    "Transformed", "as_image_data", "batches_per_epoch", "check_resumed_source", "check_source",
    "class_count", "corrupt_images", "data_record", "digits", "epoch_batches", "eval_batches",
    "fashion_mnist", "image_folder", "is_python_record", "log", "make_data",
    "python_data_message", "read_idx", "timm_dataset", "timm_transforms",
]
