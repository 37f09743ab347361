"""Checks of plug-in arguments that name the culprit, for constructors called from yaml files."""


def check_non_negative(**values):
    """Raises a ``ValueError`` naming the first argument that is negative or not finite."""
    for name, value in values.items():
        if value is not None and not (0.0 <= float(value) < float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive_int(**values):
    """Raises a ``ValueError`` naming the first argument that is not an integer >= 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_non_negative_int(**values):
    """Raises a ``ValueError`` naming the first argument that is not an integer >= 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def check_choice(name, value, choices):
    """Raises a ``ValueError`` naming ``name`` if ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
