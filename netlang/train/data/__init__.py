"""Training data: verified idx files (MNIST, Fashion-MNIST), the seed's spiral, user arrays."""
from netlang.train.data.datasets import (
                                         DATASETS,
                                         Dataset,
                                         Normalizer,
                                         Split,
                                         batch_slices,
                                         epoch_order,
                                         limit,
                                         load_dataset,
                                         steps_per_epoch,
)
from netlang.train.data.sources import FASHION_MNIST, MNIST, load_fashion_files, load_mnist_files

__all__ = ["DATASETS", "FASHION_MNIST", "MNIST", "Dataset", "Normalizer", "Split",
           "batch_slices", "epoch_order", "limit", "load_dataset", "load_fashion_files",
           "load_mnist_files", "steps_per_epoch"]
