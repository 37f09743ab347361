"""VGG-16 of Ren et al. (2020), trained from scratch on log-Mel input."""

import torch

from ser_adv_brain.models.common import PooledClassifier, conv_bn_relu, max_pool

# (convolutions, width as a multiple of base_channels) per block
VGG16_BLOCKS = [(2, 1), (2, 2), (3, 4), (3, 8), (3, 8)]


class VGG16(PooledClassifier):
    """Thirteen conv3 layers in five blocks, each block ending in 2x2 max pooling.

    Arguments
    ---------
    n_classes : int
    base_channels : int
        Channels of the first block (64 in the paper).

    Example
    -------
    >>> model = VGG16(n_classes=7, base_channels=2)
    >>> logits, embedding = model(torch.randn(2, 40, 16))
    >>> logits.shape, embedding.shape
    (torch.Size([2, 7]), torch.Size([2, 16]))
    """

    def __init__(self, n_classes=7, base_channels=64):
        layers, in_channels = [], 1
        for n_convs, multiple in VGG16_BLOCKS:
            width = base_channels * multiple
            for _ in range(n_convs):
                layers.append(conv_bn_relu(in_channels, width, 3))
                in_channels = width
            layers.append(max_pool())
        super().__init__(torch.nn.Sequential(*layers), in_channels, n_classes, "max")
