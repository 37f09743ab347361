"""ResNet-50 of Ren et al. (2020), trained from scratch on log-Mel input."""

import torch

from ser_adv_brain.models.common import PooledClassifier, conv_bn_relu, max_pool

# (bottleneck blocks, inner width as a multiple of base_channels) per stage
RESNET50_STAGES = [(3, 1), (4, 2), (6, 4), (3, 8)]
EXPANSION = 4


class Bottleneck(torch.nn.Module):
    """conv1 -> conv3 (carries the stride) -> conv1 x4 channels, plus a shortcut."""

    def __init__(self, in_channels, width, stride):
        super().__init__()
        out_channels = width * EXPANSION
        self.body = torch.nn.Sequential(
            conv_bn_relu(in_channels, width, 1),
            conv_bn_relu(width, width, 3, stride=stride),
            torch.nn.Conv2d(width, out_channels, 1, bias=False),
            torch.nn.BatchNorm2d(out_channels),
        )
        self.shortcut = torch.nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                torch.nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        """Residual sum, then ReLU."""
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet50(PooledClassifier):
    """conv7 stride 2, 3x3 max pool stride 2, then [3, 4, 6, 3] bottlenecks; average pooling.

    Arguments
    ---------
    n_classes : int
    base_channels : int
        Channels of the stem and of the first stage's inner convolutions (64 in the paper).

    Example
    -------
    >>> model = ResNet50(n_classes=7, base_channels=2)
    >>> logits, embedding = model(torch.randn(2, 40, 16))
    >>> logits.shape, embedding.shape
    (torch.Size([2, 7]), torch.Size([2, 64]))
    """

    def __init__(self, n_classes=7, base_channels=64):
        layers = [conv_bn_relu(1, base_channels, 7, stride=2), max_pool(3, stride=2)]
        in_channels = base_channels
        for stage, (n_blocks, multiple) in enumerate(RESNET50_STAGES):
            width = base_channels * multiple
            for block in range(n_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(Bottleneck(in_channels, width, stride))
                in_channels = width * EXPANSION
        super().__init__(torch.nn.Sequential(*layers), in_channels, n_classes, "avg")
