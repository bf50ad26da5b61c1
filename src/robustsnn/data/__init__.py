"""Data: in-memory image data sets read from their real on-disk formats, and deterministic batches.

>>> train = load_dataset("fashion-mnist", "train")          # doctest: +SKIP
>>> for x, y in batches(train, 128, shuffle=True, seed=0, epoch=3):  # doctest: +SKIP
...     ...  # x float32 [128, 1, 28, 28] in [0, 1], y int64 [128]

No torchvision: the readers (IDX, CIFAR pickles, SVHN .mat, Tiny-ImageNet
folders) and the augmentations (crop, flip) are a few functions each.
"""

from .array_dataset import ArrayDataset
from .datasets import load_dataset
from .errors import DataFormatError, DataNotFoundError
from .info import DATASETS, DEFAULT_DATASET, DatasetInfo, dataset_info
from .loader import batches, num_batches
from .transforms import Augmentation, default_augmentation, random_crop, random_flip

__all__ = [
    "ArrayDataset",
    "Augmentation",
    "DATASETS",
    "DEFAULT_DATASET",
    "DataFormatError",
    "DataNotFoundError",
    "DatasetInfo",
    "batches",
    "dataset_info",
    "default_augmentation",
    "load_dataset",
    "num_batches",
    "random_crop",
    "random_flip",
]
