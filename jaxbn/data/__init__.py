"""Data sets for jaxbn: IDX and CIFAR-10 readers, downloads, embedded digits, preprocessing.

Arrays are NumPy (host) arrays; converting them to JAX arrays is the caller's business.
"""

from jaxbn.data.available import available_datasets as available_datasets
from jaxbn.data.available import dataset_available as dataset_available
from jaxbn.data.cifar import CIFAR10_CLASSES as CIFAR10_CLASSES
from jaxbn.data.cifar import RestrictedUnpickler as RestrictedUnpickler
from jaxbn.data.cifar import load_cifar10_batch as load_cifar10_batch
from jaxbn.data.cifar import load_cifar10_dir as load_cifar10_dir
from jaxbn.data.datasets import DATASET_NAMES as DATASET_NAMES
from jaxbn.data.datasets import Dataset as Dataset
from jaxbn.data.datasets import load_cifar10 as load_cifar10
from jaxbn.data.datasets import load_dataset as load_dataset
from jaxbn.data.datasets import load_digits as load_digits
from jaxbn.data.datasets import load_fashion_mnist as load_fashion_mnist
from jaxbn.data.datasets import load_mnist as load_mnist
from jaxbn.data.datasets import load_mnist_embedded as load_mnist_embedded
from jaxbn.data.datasets import prepare as prepare
from jaxbn.data.download import ChecksumError as ChecksumError
from jaxbn.data.download import download_file as download_file
from jaxbn.data.download import extract_tar_safely as extract_tar_safely
from jaxbn.data.download import fetch_files as fetch_files
from jaxbn.data.errors import DatasetError as DatasetError
from jaxbn.data.errors import DatasetNotFoundError as DatasetNotFoundError
from jaxbn.data.idx import load_idx_pair as load_idx_pair
from jaxbn.data.idx import read_idx_images as read_idx_images
from jaxbn.data.idx import read_idx_labels as read_idx_labels
from jaxbn.data.paths import DATA_ENV as DATA_ENV
from jaxbn.data.paths import data_root as data_root
from jaxbn.data.preprocess import flatten as flatten
from jaxbn.data.preprocess import mean_image as mean_image
from jaxbn.data.preprocess import scale_pixels as scale_pixels
from jaxbn.data.preprocess import subtract_mean as subtract_mean
from jaxbn.data.preprocess import train_val_split as train_val_split
from jaxbn.data.sources import MIRROR_ENV as MIRROR_ENV
from jaxbn.data.sources import SOURCES as SOURCES
from jaxbn.data.toy import TOY_NAMES as TOY_NAMES
from jaxbn.data.toy import make_toy as make_toy

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DATA_ENV",
    "MIRROR_ENV",
    "SOURCES",
    "TOY_NAMES",
    "ChecksumError",
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "RestrictedUnpickler",
    "available_datasets",
    "data_root",
    "dataset_available",
    "download_file",
    "extract_tar_safely",
    "fetch_files",
    "flatten",
    "load_cifar10",
    "load_cifar10_batch",
    "load_cifar10_dir",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_idx_pair",
    "load_mnist",
    "load_mnist_embedded",
    "make_toy",
    "mean_image",
    "prepare",
    "read_idx_images",
    "read_idx_labels",
    "scale_pixels",
    "subtract_mean",
    "train_val_split",
]
