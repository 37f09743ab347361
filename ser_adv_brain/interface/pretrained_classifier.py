"""Any SpeechBrain pretrained classifier interface as a model the attack suite can run: waveform -> class scores.

``ser-adv attack-interface`` attacks an emotion model it did not train: a folder or hub source that
SpeechBrain's ``EncoderClassifier.from_hparams`` or ``foreign_class`` loads. Its ``classify_batch``
must be differentiable from the waveform to the scores; ``PretrainedClassifier.gradient_problem``
says in one line why it is not, and the command refuses it then.
"""

import logging

import torch
import torch.nn.functional as F
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.inference.interfaces import foreign_class

logger = logging.getLogger(__name__)

# SpeechBrain's Hugging Face wrappers: with ``freeze: True`` they run their encoder under torch.no_grad().
HF_WRAPPERS = "speechbrain.integrations.huggingface"


def load_interface(source, savedir=None, interface_class=None, pymodule_file=None, device="cpu"):
    """The interface at ``source`` (a folder or a hub id): SpeechBrain's ``EncoderClassifier``, or with
    ``pymodule_file``, the class ``interface_class`` of that file of the source (``foreign_class``)."""
    run_opts = {"device": device}
    if pymodule_file is None:
        if interface_class not in (None, "EncoderClassifier"):
            raise ValueError(f"--interface_class {interface_class!r} needs --pymodule_file, the file that defines it.")
        return EncoderClassifier.from_hparams(source=source, savedir=savedir, run_opts=run_opts)
    if interface_class is None:
        raise ValueError(f"--pymodule_file {pymodule_file!r} needs --interface_class, the class it defines.")
    return foreign_class(
        source=source, pymodule_file=pymodule_file, classname=interface_class, savedir=savedir, run_opts=run_opts
    )


def unfreeze_wrappers(interface):
    """Lets gradients through SpeechBrain's frozen Hugging Face wrappers; returns their module names.

    A wrapper with ``freeze: True`` runs its encoder under ``torch.no_grad()``: its weights are
    not trained, and no gradient reaches the audio either. Running it with autograd computes the
    same scores (the interface is in eval mode), and gives the attacks their gradient.
    """
    names = []
    for name, module in interface.mods.named_modules():
        if type(module).__module__.startswith(HF_WRAPPERS) and getattr(module, "freeze", False) is True:
            module.freeze = False
            names.append(name)
    return names


class PretrainedClassifier(torch.nn.Module):
    """Waveforms ``[batch, time]`` -> ``(scores, scores)``: a SpeechBrain classifier interface's ``classify_batch``.

    Its first output (``out_prob``: log posteriors for ``EncoderClassifier``) is taken as the
    logits. Probabilities (rows of non-negative numbers summing to 1, as some custom interfaces
    return) are turned into their logarithm at the first call: an attack's cross-entropy on
    probabilities would barely move (AutoAttack's warning on softmax outputs). The interface gives
    no embedding the suite needs, so the scores stand for it too.

    Arguments
    ---------
    interface : speechbrain.inference.interfaces.Pretrained
        With ``classify_batch(wavs)`` and ``hparams.label_encoder``.

    Example
    -------
    >>> class Toy(torch.nn.Module):  # a stand-in for a loaded interface
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layer = torch.nn.Linear(8, 3)
    ...     def classify_batch(self, wavs):
    ...         return (self.layer(wavs).log_softmax(-1),)
    >>> model = PretrainedClassifier(Toy())
    >>> model.gradient_problem(torch.randn(1, 8)) is None
    True
    >>> model(torch.randn(2, 8))[0].shape
    torch.Size([2, 3])
    """

    input_domain = "waveform"

    def __init__(self, interface):
        super().__init__()
        self.interface = interface
        self.probabilities = None  # whether classify_batch gives probabilities: found at the first call

    def forward(self, wavs):
        scores = self.interface.classify_batch(wavs)[0].float()
        if self.probabilities is None:
            rows = scores.detach()
            self.probabilities = bool((rows >= 0).all() and torch.allclose(rows.sum(-1), torch.ones_like(rows[:, 0])))
        if self.probabilities:
            scores = scores.clamp_min(torch.finfo(scores.dtype).tiny).log()
        return scores, scores

    def gradient_problem(self, wavs, n_classes=None):
        """Why gradient attacks cannot run on the interface, in one line; None if they can.

        Runs ``wavs`` (real audio, ``[batch, time]``) through it and backpropagates the
        cross-entropy of each utterance's least likely class to the waveform.
        """
        wavs = wavs.detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                scores, _ = self(wavs)
        except Exception as error:  # whatever it raises, it cannot take a waveform tensor
            return f"its classify_batch fails on a waveform tensor ({type(error).__name__}: {error})"
        expected = [len(wavs), n_classes or (scores.shape[-1] if scores.dim() else 0)]
        if scores.dim() != 2 or list(scores.shape) != expected:
            return (
                f"its classify_batch's first output has shape {list(scores.shape)}, not [batch, classes] = {expected}"
            )
        if not scores.requires_grad:
            return "its scores carry no gradient back to the waveform (computed under torch.no_grad(), or detached)"
        loss = F.cross_entropy(scores, scores.detach().argmin(dim=-1))
        (grad,) = torch.autograd.grad(loss, wavs, allow_unused=True)
        if grad is None:
            return "its scores do not depend on the waveform tensor it is given (it reads the audio some other way)"
        if not torch.isfinite(grad).all():
            return "the gradient of its scores with respect to the waveform is not finite"
        if not (grad != 0).any():
            return "the gradient of its scores with respect to the waveform is zero (a step inside stops it)"
        return None
