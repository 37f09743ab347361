"""CNN-4 of Ren et al. (2020): four conv5 blocks with max pooling."""

import torch

from ser_adv_brain.models.common import PooledClassifier, conv_bn_relu, max_pool


class CNN4(PooledClassifier):
    """conv5-64, conv5-128, conv5-256, conv5-512, each followed by 2x2 max pooling.

    Arguments
    ---------
    n_classes : int
    base_channels : int
        Channels of the first block (64 in the paper); later blocks double it.

    Example
    -------
    >>> model = CNN4(n_classes=7, base_channels=4)
    >>> logits, embedding = model(torch.randn(2, 40, 16))
    >>> logits.shape, embedding.shape
    (torch.Size([2, 7]), torch.Size([2, 32]))
    """

    def __init__(self, n_classes=7, base_channels=64):
        widths = [base_channels * 2**i for i in range(4)]
        layers, in_channels = [], 1
        for width in widths:
            layers += [conv_bn_relu(in_channels, width, 5), max_pool()]
            in_channels = width
        super().__init__(torch.nn.Sequential(*layers), in_channels, n_classes, "max")
