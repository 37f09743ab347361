"""Pieces shared by the three models: conv-BN-ReLU and the pooled classifier head."""

import copy

import torch


def conv_bn_relu(in_channels, out_channels, kernel_size, stride=1):
    """A 'same'-padded convolution, batch norm and ReLU, the unit of every model here."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,  # batch norm's shift makes a conv bias redundant
        ),
        torch.nn.BatchNorm2d(out_channels),
        torch.nn.ReLU(inplace=True),
    )


class MaxPool2d(torch.nn.MaxPool2d):
    """torch's max pooling, run in channels-last memory order on a CPU when no gradient is taken.

    On a CPU torch's kernel for the default (channels-first) order is the slow one: on CNN-4 at width 16 it
    takes a third of a forward pass, and the Square Attack's queries and smoothing's votes are forward passes by
    the thousand. A maximum is exact in any memory order, and the result goes back to channels-first before the
    next convolution, so every output is bit for bit the same (``bench/inference_cost.py`` measures the saving and
    checks it). With a gradient the channels-last backward is the slower one: that path is left as it was.
    """

    def forward(self, maps):
        if maps.device.type == "cpu" and not (torch.is_grad_enabled() and maps.requires_grad):
            return super().forward(maps.contiguous(memory_format=torch.channels_last)).contiguous()
        return super().forward(maps)


def with_torch_pooling(model):
    """A copy of ``model`` with torch's ``MaxPool2d`` (channels-first on every path) in place of ``MaxPool2d``: the
    reference that ``bench/inference_cost.py`` times and the tests compare with."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, MaxPool2d):
                pool = torch.nn.MaxPool2d(child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode)
                setattr(module, name, pool)
    return model


def max_pool(kernel_size=2, stride=None):
    """Max pooling that keeps a size-1 axis alive, so tiny test inputs pass every stage."""
    return MaxPool2d(kernel_size, stride=stride, ceil_mode=True)


class PooledClassifier(torch.nn.Module):
    """A 2-D convolutional trunk, global pooling over time and frequency, one linear layer.

    The pooled vector ``v`` feeds the final fully connected layer: the
    similarity-based defence compares it between real and fake inputs, so
    ``forward`` returns it with the logits.

    Arguments
    ---------
    trunk : torch.nn.Module
        Maps ``[batch, 1, frames, n_mels]`` to ``[batch, channels, h, w]``.
    embedding_dim : int
        ``channels`` of the trunk's output.
    n_classes : int
    pooling : str
        ``"max"`` (the authors' CNN-4 and VGG-16) or ``"avg"`` (their ResNet-50).
    """

    input_domain = "features"  # the normalised log-Mel features (``models.takes_waveform``)

    def __init__(self, trunk, embedding_dim, n_classes, pooling="max"):
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        self.trunk = trunk
        self.pooling = pooling
        self.embedding_dim = embedding_dim
        self.classifier = torch.nn.Linear(embedding_dim, n_classes)

    def forward(self, feats):
        """Maps ``[batch, frames, n_mels]`` features to ``(logits, embedding)``."""
        maps = self.trunk(feats.unsqueeze(1))
        if self.pooling == "max":
            embedding = maps.amax(dim=(-2, -1))
        else:
            embedding = maps.mean(dim=(-2, -1))
        return self.classifier(embedding), embedding
