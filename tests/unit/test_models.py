"""CNN-4, VGG-16 and ResNet-50: tiny forward passes, and full-size layers as in the paper's table."""

import pytest
import torch

from ser_adv_brain.models import CNN4, VGG16, ResNet50
from ser_adv_brain.models.common import PooledClassifier, with_torch_pooling
from ser_adv_brain.models.resnet50 import Bottleneck

# Embedding width per base_channels: CNN-4 and VGG-16 end at 8x, ResNet-50 at 8x4.
EMBEDDING_MULTIPLE = {CNN4: 8, VGG16: 8, ResNet50: 32}


def convs(module):
    """(kernel, out_channels, stride) of every Conv2d, in definition order."""
    return [(m.kernel_size[0], m.out_channels, m.stride[0]) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


def layer_kinds(sequential):
    """The trunk flattened to a string: C<kernel>-<out>, B (batch norm), R (ReLU), P (max pool)."""
    kinds = []
    for m in sequential.modules():
        if isinstance(m, torch.nn.Conv2d):
            kinds.append(f"C{m.kernel_size[0]}-{m.out_channels}")
        elif isinstance(m, torch.nn.BatchNorm2d):
            kinds.append("B")
        elif isinstance(m, torch.nn.ReLU):
            kinds.append("R")
        elif isinstance(m, torch.nn.MaxPool2d):
            kinds.append("P")
    return " ".join(kinds)


@pytest.mark.parametrize("model_class", [CNN4, VGG16, ResNet50])
@pytest.mark.parametrize("n_classes", [7, 4])
def test_tiny_forward_returns_logits_and_embedding(model_class, n_classes):
    torch.manual_seed(0)
    model = model_class(n_classes=n_classes, base_channels=2)
    feats = torch.randn(3, 40, 16, requires_grad=True)
    logits, embedding = model(feats)
    assert logits.shape == (3, n_classes)
    assert embedding.shape == (3, 2 * EMBEDDING_MULTIPLE[model_class]) == (3, model.embedding_dim)
    # The embedding is what feeds the final FC layer.
    assert torch.allclose(logits, model.classifier(embedding))
    logits.sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("model_class", [CNN4, VGG16, ResNet50])
def test_short_inputs_pass_every_stage(model_class):
    model = model_class(base_channels=2).eval()
    logits, _ = model(torch.randn(1, 9, 5))
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()


@pytest.mark.parametrize("model_class, pooling", [(CNN4, "max"), (VGG16, "max"), (ResNet50, "avg")])
def test_global_pooling(model_class, pooling):
    model = model_class(base_channels=2).eval()
    feats = torch.randn(2, 40, 16)
    maps = model.trunk(feats.unsqueeze(1))
    expected = maps.amax(dim=(-2, -1)) if pooling == "max" else maps.mean(dim=(-2, -1))
    assert model.pooling == pooling
    assert torch.allclose(model(feats)[1], expected)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        PooledClassifier(torch.nn.Identity(), 4, 7, pooling="median")


def test_full_size_cnn4():
    """conv5-64, conv5-128, conv5-256, conv5-512, each with BN, ReLU and max pooling; FC 512 -> 7."""
    model = CNN4()
    block = "C5-{} B R P"
    assert layer_kinds(model.trunk) == " ".join(block.format(c) for c in (64, 128, 256, 512))
    assert convs(model) == [(5, 64, 1), (5, 128, 1), (5, 256, 1), (5, 512, 1)]
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 7)


def test_full_size_vgg16():
    """2x conv3-64, 2x conv3-128, 3x conv3-256, 3x conv3-512, 3x conv3-512, a max pool after each group."""
    model = VGG16()
    groups = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]
    expected = " ".join(" ".join([f"C3-{c} B R"] * n) + " P" for n, c in groups)
    assert layer_kinds(model.trunk) == expected
    assert len(convs(model)) == 13 and all(k == 3 and s == 1 for k, _, s in convs(model))
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 5
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 7)


def test_full_size_resnet50():
    """conv7-64 stride 2, maxpool 3 stride 2, then 3/4/6/3 bottlenecks [conv1-w, conv3-w, conv1-4w]."""
    model = ResNet50()
    stem_conv, stem_pool = model.trunk[0][0], model.trunk[1]
    assert (stem_conv.kernel_size, stem_conv.out_channels, stem_conv.stride) == ((7, 7), 64, (2, 2))
    assert isinstance(stem_pool, torch.nn.MaxPool2d) and (stem_pool.kernel_size, stem_pool.stride) == (3, 2)
    blocks = [m for m in model.trunk if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    start = 0
    for stage, (n_blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
        for index, block in enumerate(blocks[start : start + n_blocks]):
            body = convs(block.body)
            stride = 2 if stage > 0 and index == 0 else 1
            assert body == [(1, width, 1), (3, width, stride), (1, 4 * width, 1)]
            # A projection shortcut wherever the shape changes.
            assert bool(convs(block.shortcut)) == (index == 0)
        start += n_blocks
    assert (model.classifier.in_features, model.classifier.out_features) == (2048, 7)


@pytest.mark.parametrize("model_class, dim", [(CNN4, 512), (VGG16, 512), (ResNet50, 2048)])
def test_full_size_embedding_dims(model_class, dim):
    """A small input through the full-width model: the embedding that feeds the FC layer."""
    model = model_class().eval()
    with torch.no_grad():
        logits, embedding = model(torch.randn(1, 32, 32))
    assert embedding.shape == (1, dim) and logits.shape == (1, 7)


@pytest.mark.parametrize("model_class", [CNN4, VGG16, ResNet50])
def test_batch_norm_after_every_conv(model_class):
    model = model_class(base_channels=2)
    kinds = layer_kinds(model.trunk).split()
    assert all(after == "B" for kind, after in zip(kinds, kinds[1:]) if kind.startswith("C"))


@pytest.mark.parametrize("model_class", [CNN4, VGG16, ResNet50])
def test_pooling_in_channels_last_order_changes_no_output(model_class):
    """Without a gradient a CPU pools in channels-last order (``MaxPool2d``): logits and embedding are torch's
    channels-first pooling's bit for bit, at odd sizes too (ceil mode), in eval and train mode; with a gradient
    the input's gradient is too."""
    torch.manual_seed(0)
    model = model_class(n_classes=7, base_channels=8)
    reference = with_torch_pooling(model)
    feats = torch.randn(3, 75, 37)
    for train in (False, True):
        model.train(train), reference.train(train)
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(model(feats), reference(feats)))
    gradients = [
        torch.autograd.grad(m(f)[0].sum(), f)[0] for m in (model, reference) for f in [feats.clone().requires_grad_()]
    ]
    assert torch.equal(*gradients)
