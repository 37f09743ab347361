"""PGD that stops each utterance at its first successful iterate: the same verdict or stronger, for fewer passes."""

import pytest
import torch

from ser_adv_brain.attacks import PGD
from ser_adv_brain.models import CNN4


class Counting(torch.nn.Module):
    """Counts the utterances the model is run on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, inputs):
        self.rows += len(inputs)
        return self.model(inputs)


def compare(make, model, inputs, targets):
    """Plain and stopping runs of one attack; the rows each ran the model on."""
    plain, stopping = Counting(model).eval(), Counting(model).eval()
    full = make(False).perturb(plain, inputs, targets, keys=[str(i) for i in range(len(inputs))])
    early = make(True).perturb(stopping, inputs, targets, keys=[str(i) for i in range(len(inputs))])
    with torch.no_grad():
        fooled = model(early)[0].argmax(-1) != targets
    return full, early, fooled, plain.rows, stopping.rows


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_stopping_pgd_keeps_a_success_and_otherwise_ends_where_pgd_does(norm):
    torch.manual_seed(0)
    model = CNN4(n_classes=3, base_channels=2).eval()
    inputs, targets = torch.randn(8, 20, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    eps = 0.3 if norm == "linf" else 3.0

    def make(stop):
        return PGD(eps=eps, steps=6, norm=norm, restarts=2, eta=None, label_source="target", stop_when_fooled=stop)

    full, early, fooled, rows_full, rows_early = compare(make, model, inputs, targets)
    assert 0 < int(fooled.sum()) < len(inputs)  # some stop, some run every step
    assert torch.allclose(early[~fooled], full[~fooled], atol=1e-6)
    with torch.no_grad():
        assert bool((model(full)[0].argmax(-1) != targets)[~fooled].logical_not().all())
    assert rows_early < rows_full
