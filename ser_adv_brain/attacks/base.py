"""What every attack shares: its threat model, the labels it attacks, the model's mode, the budget.

Attacks work on the model's input, the normalised log-Mel features (or, for
waveform attacks, the samples). Nothing is clamped to [0, 1]: z-scored
features take any value.

What an attack declares
-----------------------
An evaluation never probes an attack for what it can do: every attack
declares it in attributes of its class (or of its instance, where an option
decides), and ``Attack`` gives the defaults.

- ``threat_model`` (from ``domain`` and ``norm``, below): the attacks of one
  threat model are compared per utterance (robust UAR takes the worst case
  over them at each budget);
- ``black_box``: it never asks the attacked model for a gradient (Square
  Attack queries scores only; a transfer attack runs on another model);
- ``steps``: gradient steps per run (1: a single-step attack);
- ``kind``: ``"black-box"``, ``"iterative"``, ``"single-step"`` or
  ``"universal"``, what the gradient-masking checks compare;
- ``random`` and ``generator``: it draws random numbers, from its own generator;
- ``needs_source_model``: it runs on another trained model, which must be
  given to it first (``TransferAttack.attach_source``);
- ``max_queries``: its query budget (score-based attacks), None otherwise;
- ``rooms``: an over-the-air attack's ``SimulatedRooms``: it is made in their attack rooms, and the
  suite scores its audio in their held-out rooms; None: the model hears the adversarial input as it is;
- ``reports``: the per-utterance fields its ``run`` returns beside the
  adversarial input (the queries used, the realised SNR); ``run`` exists only
  where ``reports`` is not empty;
- ``name``: its name in reports (``PGD-10``, ``APGD-T``).

Threat models
-------------

- ``domain``: ``"features"`` (the normalised log-Mel input of the model) or
  ``"waveform"`` (the audio samples, before the log-Mel and the normaliser).
- ``norm``: ``"linf"`` (max absolute change), ``"l2"`` (Euclidean norm of
  each utterance's change), ``"snr"`` (a per-utterance signal-to-noise
  ratio in dB: an L2 radius relative to the utterance's own norm) or
  ``"universal"`` (one perturbation for every utterance, its RMS in dB below
  the training split's median level: ``UniversalPerturbation``).

``threat_model`` is the pair ``(domain, norm)``; the attack's ``eps`` is the
budget in the norm's unit. ``eta``, where an attack has it, clips every
feature to ``[x - eta, x + eta]`` on top of ``eps`` (the paper's clip).

The attack's contract: ``perturb(model, inputs, targets, eps=None,
loss_scale=1.0, gradient=None, keys=None)`` returns the adversarial inputs (a tensor
shaped like ``inputs``), and ``curve(model, inputs, targets, eps_grid)``
yields ``(eps, adversarial inputs)`` for each budget. Attacks that have more
to report (the realised SNR, the queries used) say so in a ``run`` method.
Every attack leaves the model's mode, its batch-norm statistics and its
parameter gradients as it found them, checks its options at construction,
naming the culprit, and draws its randomness from its own seeded
``torch.Generator``, never from torch's global one (an evaluation must not
shift training's random stream).

Random attacks take ``keys`` (one per utterance, e.g. its ID): each
utterance's draws then come from a generator seeded by the attack's seed and
its key alone, so its result does not depend on which other utterances share
its batch (the suite's early exit changes no result, only the cost). Without
keys (training) the attack's own generator advances with every call.
"""

import contextlib
import copy
import hashlib

import torch
import torch.nn.functional as F

from ser_adv_brain.checks import check_choice, check_non_negative

LABEL_SOURCES = ("predicted", "target")
MODEL_MODES = ("eval", "train")
DOMAINS = ("features", "waveform")
NORMS = ("linf", "l2", "snr", "universal")
LEAST_LIKELY = "least_likely"


def keyed_seed(seed, key, stream=0):
    """A 63-bit seed from the attack's seed, an utterance's key and a stream number (stable across processes).

    Example
    -------
    >>> keyed_seed(0, "03a01Fa") == keyed_seed(0, "03a01Fa") != keyed_seed(1, "03a01Fa")
    True
    """
    digest = hashlib.blake2b(f"{seed}/{stream}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def random_rows(shape, generator, keys=None, seed=0, stream=0, draw=torch.rand):
    """``draw(shape)`` (torch.rand or torch.randn, on the CPU) for a batch ``shape[0]`` long.

    From ``generator`` for the whole batch if ``keys`` is None; otherwise row
    ``i`` from its own generator seeded by ``(seed, keys[i], stream)``, so that
    it does not depend on the other rows. ``draw`` may be a list of such
    functions with a list of shapes: each row's generator then serves them in turn.
    """
    draws, shapes = (draw, shape) if isinstance(draw, list) else ([draw], [shape])
    if keys is None or len(keys) == 0:
        out = [d(s, generator=generator) for d, s in zip(draws, shapes)]
    else:
        rows = []
        for key in keys:
            own = torch.Generator().manual_seed(keyed_seed(seed, key, stream))
            rows.append([d(s[1:], generator=own) for d, s in zip(draws, shapes)])
        out = [torch.stack(parts) for parts in zip(*rows)]
    return out if isinstance(draw, list) else out[0]


def class_names_of(label_set):
    """The class names, in index order, of a ``CategoricalEncoder`` or a sequence of names."""
    if hasattr(label_set, "ind2lab"):
        return [label_set.ind2lab[index] for index in range(len(label_set.ind2lab))]
    return list(label_set)


@contextlib.contextmanager
def batchnorm_stats_preserved(model):
    """Restores every BatchNorm running statistic on exit: generation passes must not train BN."""
    saved = [
        (buffer, buffer.clone())
        for module in model.modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        for buffer in module.buffers()
    ]
    try:
        yield
    finally:
        # Through .data: a tracked in-place copy would bump the buffers' version
        # and break the backward of a training forward that saved them.
        for buffer, value in saved:
            buffer.data.copy_(value)


@contextlib.contextmanager
def modes_restored(model):
    """Puts back every submodule's own train/eval flag on exit (they need not all agree)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def predict(model, inputs):
    """The model's predicted classes as an evaluation sees them: eval mode, no autograd; modes are restored."""
    with modes_restored(model), torch.no_grad():
        model.eval()
        logits, _ = model(inputs)
    return logits.argmax(dim=-1)


class Attack:
    """Base class of all attacks: the threat model, the budget, the labels attacked, the model's mode.

    Arguments
    ---------
    eps : float
        The budget, in the unit of the attack's ``norm``.
    eta : float or None
        The perturbation is clipped to ``[x - eta, x + eta]``; ``None`` disables the clip.
    label_source : str
        ``"predicted"``: attack the model's own prediction (the authors' code;
        avoids label leaking). ``"target"``: attack the true label (the paper's formula).
    model_mode : str
        Mode of the model while the attack runs it: ``"eval"`` (the authors'
        code: batch norm uses running statistics) or ``"train"``. Either way
        the model's mode and its batch-norm statistics come back unchanged.
    """

    domain = None  # "features" or "waveform": see the module docstring
    norm = None  # "linf", "l2" or "snr"
    black_box = False
    steps = 1
    generator = None  # a random attack's own torch.Generator: training checkpoints save its state
    needs_source_model = False
    needs_training_data = False
    max_queries = None
    rooms = None  # an over-the-air attack's SimulatedRooms (the suite scores in their held-out ones)
    reports = ()

    def __init__(self, eps, *, eta=0.1, label_source="predicted", model_mode="eval", norm=None):
        if norm is not None:  # an attack with a choice of norms (the class's own otherwise)
            check_choice("norm", norm, self.norms())
            self.norm = norm
        self.check_budget(eps)
        check_non_negative(eta=eta)
        check_choice("label_source", label_source, LABEL_SOURCES)
        check_choice("model_mode", model_mode, MODEL_MODES)
        self.eps = float(eps)
        self.eta = None if eta is None else float(eta)
        self.label_source = label_source
        self.model_mode = model_mode
        self.class_names = None

    @staticmethod
    def norms():
        """The norms an attack with a ``norm`` argument accepts."""
        return ("linf",)

    def check_budget(self, eps):
        """Raises a ``ValueError`` naming ``eps`` if it is not a budget of this attack's norm."""
        check_non_negative(eps=eps)

    @property
    def kind(self):
        """``"black-box"``, ``"iterative"`` (white-box, several steps) or ``"single-step"``."""
        if self.black_box:
            return "black-box"
        return "iterative" if self.steps > 1 else "single-step"

    @property
    def random(self):
        """Whether the attack draws random numbers (from its own ``generator``)."""
        return self.generator is not None

    @property
    def name(self):
        """Its name in reports: the class name, with its number of steps if it iterates (``PGD-10``)."""
        return f"{type(self).__name__}-{self.steps}" if self.steps > 1 else type(self).__name__

    def set_class_names(self, class_names):
        """Gives the label set (a ``CategoricalEncoder`` or names in index order); returns the attack.

        The recipe and the interface call it once their label encoder is loaded.
        """
        self.class_names = class_names_of(class_names)
        return self

    @property
    def threat_model(self):
        """``"<domain>_<norm>"`` (``"features_linf"``): attacks with the same one and budget are compared
        per utterance."""
        return f"{self.domain}_{self.norm}"

    def __repr__(self):
        return (
            f"{type(self).__name__}(eps={self.eps}, eta={self.eta}, "
            f"label_source={self.label_source!r}, model_mode={self.model_mode!r})"
        )

    def labels(self, logits, targets):
        """The labels the attack moves the prediction away from."""
        if self.label_source == "predicted":
            return logits.detach().argmax(dim=-1)
        if targets is None:
            raise ValueError(f"{self!r} attacks the true labels (label_source='target'): pass targets.")
        return targets

    def project(self, adversarial, inputs):
        """Clips the perturbation to the eta-ball around the inputs."""
        if self.eta is None:
            return adversarial
        return torch.maximum(torch.minimum(adversarial, inputs + self.eta), inputs - self.eta)

    @contextlib.contextmanager
    def generation_mode(self, model, grad=True):
        """Puts the model in the attack's mode, and puts everything back afterwards.

        ``grad=False`` runs it without autograd (score-based attacks).
        """
        train = self.model_mode == "train"
        # Only a train-mode pass updates BN statistics, so only it needs guarding.
        guard = batchnorm_stats_preserved(model) if train else contextlib.nullcontext()
        with modes_restored(model), guard, torch.set_grad_enabled(grad):
            model.train(train)
            yield

    def perturb(self, model, inputs, targets, eps=None, loss_scale=1.0, gradient=None, keys=None):
        """Returns adversarial inputs.

        ``eps`` overrides the attack's own budget; ``gradient``, if given, is
        the input gradient at ``inputs`` of the attack's loss, already
        computed by the caller (the training step gets it for free); ``keys``
        (one per utterance) seed a random attack's draws per utterance.
        """
        raise NotImplementedError

    def curve(self, model, inputs, targets, eps_grid, loss_scale=1.0):
        """Yields ``(eps, adversarial inputs)`` for each budget of a robustness curve."""
        for eps in eps_grid:
            yield eps, self.perturb(model, inputs, targets, eps=eps, loss_scale=loss_scale)


class GradientAttack(Attack):
    """Base class of attacks that follow the loss gradient w.r.t. the input; untargeted or targeted.

    Arguments
    ---------
    eps, eta, label_source, model_mode :
        See ``Attack``.
    target_class : str, int or None
        None: untargeted (the cross-entropy of ``label_source``'s labels goes
        up). Otherwise the attack is targeted: the cross-entropy of the
        target class goes down, and ``label_source`` is not used. An emotion
        name (resolved against ``class_names``), a class index, or
        ``"least_likely"`` (each utterance's least likely class at the clean
        input, Kurakin et al., 2017).
    class_names : CategoricalEncoder, list of str or None
        The label set, to resolve an emotion name; it may also be given later
        with ``set_class_names`` (the recipe and the interface do, once their
        label encoder is loaded).
    """

    def __init__(
        self,
        eps,
        *,
        eta=0.1,
        label_source="predicted",
        model_mode="eval",
        target_class=None,
        class_names=None,
        norm=None,
    ):
        super().__init__(eps, eta=eta, label_source=label_source, model_mode=model_mode, norm=norm)
        self.set_target(target_class)
        if class_names is not None:
            self.set_class_names(class_names)

    def set_target(self, target_class):
        """Checks and sets ``target_class`` (see the class docstring), resolved if the label set is known."""
        is_index = isinstance(target_class, int) and not isinstance(target_class, bool)
        if not (target_class is None or isinstance(target_class, str) or (is_index and target_class >= 0)):
            raise ValueError(
                f"target_class must be None, an emotion name, an index >= 0 or {LEAST_LIKELY!r}, got {target_class!r}"
            )
        self.target_class = target_class
        self.target_index = target_class if is_index else None
        if self.class_names is not None:
            self.set_class_names(self.class_names)

    @property
    def targeted(self):
        return self.target_class is not None

    @property
    def uses_given_gradient(self):
        """Whether ``perturb`` uses a ``gradient`` at the clean inputs (the training step passes it if so)."""
        return True

    def __repr__(self):
        target = f", target_class={self.target_class!r}" if self.targeted else ""
        return super().__repr__()[:-1] + target + ")"

    def set_class_names(self, class_names):
        """Gives the label set (see ``Attack``) and resolves ``target_class`` against it."""
        super().set_class_names(class_names)
        if isinstance(self.target_class, str) and self.target_class != LEAST_LIKELY:
            if self.target_class not in self.class_names:
                raise ValueError(f"target_class {self.target_class!r} is not in the label set {self.class_names}.")
            self.target_index = self.class_names.index(self.target_class)
        elif self.target_index is not None and self.target_index >= len(self.class_names):
            raise ValueError(
                f"target_class {self.target_index} is out of range for the {len(self.class_names)} classes "
                f"{self.class_names}."
            )
        return self

    def targeted_at(self, target_class):
        """A copy of this attack aimed at another ``target_class`` (None: untargeted)."""
        attack = copy.copy(self)
        attack.set_target(target_class)
        return attack

    def labels(self, logits, targets):
        """The labels whose cross-entropy the attack raises (untargeted) or lowers (targeted)."""
        if not self.targeted:
            return super().labels(logits, targets)
        if self.target_class == LEAST_LIKELY:
            return logits.detach().argmin(dim=-1)
        if self.target_index is None:
            raise ValueError(
                f"target_class {self.target_class!r} needs the label set to be resolved: "
                "call attack.set_class_names(label_encoder) first."
            )
        if self.target_index >= logits.shape[-1]:
            raise ValueError(f"target_class {self.target_index} is out of range for {logits.shape[-1]} classes.")
        return torch.full(logits.shape[:1], self.target_index, dtype=torch.long, device=logits.device)

    def succeeded(self, logits, labels):
        """Per utterance: prediction moved off ``labels`` (untargeted) or onto them (targeted)."""
        predictions = logits.argmax(dim=-1)
        return predictions == labels if self.targeted else predictions != labels

    def succeeded_as_scored(self, model, adversarial, inputs, succeeded, labels):
        """``succeeded`` (from the logits at ``adversarial``) for the input the attack will return: here the
        same; a waveform attack's is its audio rounded to 16-bit PCM (``WaveformBudget``)."""
        return succeeded

    def loss(self, logits, labels):
        """Per-utterance loss the attack increases: the cross-entropy, negated when targeted."""
        loss = F.cross_entropy(logits.float(), labels, reduction="none")
        return -loss if self.targeted else loss

    def gradient_from_logits(self, logits, inputs, labels, loss_scale=1.0, retain_graph=False):
        """``grad_inputs`` of the attack's loss summed over the batch, for logits already computed from ``inputs``.

        ``loss_scale`` multiplies the loss first, as a GradScaler does, so that
        fp16 gradients keep their sign instead of underflowing to zero.
        """
        loss = self.loss(logits, labels).sum() * loss_scale
        (grad,) = torch.autograd.grad(loss, inputs, retain_graph=retain_graph)
        return grad

    def input_gradient(self, model, inputs, targets, labels=None, loss_scale=1.0):
        """One forward and input-only backward pass in the attack's mode.

        Returns the gradient and the labels it was taken for, so that
        iterative attacks keep attacking the same (first) prediction.
        Parameter gradients are neither computed nor touched.
        """
        with self.generation_mode(model):
            return self.gradient_in_mode(model, inputs, targets, labels, loss_scale)

    def gradient_in_mode(self, model, inputs, targets, labels=None, loss_scale=1.0):
        """``input_gradient`` for a model already in the attack's mode (iterative attacks enter it once)."""
        inputs = inputs.detach().requires_grad_(True)
        logits, _ = model(inputs)
        if labels is None:
            labels = self.labels(logits, targets)
        return self.gradient_from_logits(logits, inputs, labels, loss_scale), labels
