"""Exceptions raised while loading or running a backbone, each with a message a user can act on."""

from __future__ import annotations

from conceptlens.errors import ConceptlensError

__all__ = [
    "BackboneError",
    "BackboneLoadError",
    "BackboneNotFoundError",
    "MissingExtraError",
    "RemoteCodeRequiredError",
    "UnknownBackboneError",
    "UnsupportedBackboneError",
]


class BackboneError(ConceptlensError):
    """Base class of every backbone error in :mod:`conceptlens.models`."""


class BackboneLoadError(BackboneError, OSError):
    """Weights, config or processor could not be obtained: hub unreachable, repository gated
    or not found, revision unknown, local folder incomplete.

    Also an :class:`OSError`, like the errors of ``transformers.from_pretrained`` it replaces.
    """


class BackboneNotFoundError(BackboneLoadError, FileNotFoundError):
    """A local folder (or the shipped demo weights) does not exist or lacks ``config.json``."""


class RemoteCodeRequiredError(BackboneError, ValueError):
    """The model ships its own Python code and ``trust_remote_code=True`` was not passed."""


class UnknownBackboneError(BackboneError, ValueError):
    """A short name that :func:`conceptlens.models.list_backbones` does not know."""


class UnsupportedBackboneError(BackboneError, ValueError):
    """A model family or layout the adapters cannot handle (the message says what was found)."""


class MissingExtraError(BackboneError, ImportError):
    """An optional dependency group is not installed; the message names the ``pip install``
    (e.g. ``pip install "conceptlens[open_clip]"``)."""
