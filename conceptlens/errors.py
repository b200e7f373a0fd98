"""The library's exception and warning roots.

Every error conceptlens raises on purpose derives from :class:`ConceptlensError` (and from
the built-in class a caller would already catch, e.g. ``ValueError`` or ``KeyError``), and
every warning from :class:`ConceptlensWarning`, so ``except ConceptlensError`` and
``warnings.simplefilter("error", ConceptlensWarning)`` cover the whole library.

This module imports nothing from the package: every layer may import it.
"""

from __future__ import annotations

__all__ = [
    "BaselineWarning",
    "ConceptlensError",
    "ConceptlensWarning",
    "ConvergenceWarning",
    "DeprecatedNameWarning",
    "InputQualityWarning",
    "ScoreSpaceMismatchError",
    "UnknownClassError",
    "UnknownConceptError",
    "VocabularyMismatchError",
]


class ConceptlensError(Exception):
    """Base class of every error conceptlens raises on purpose."""


class ConceptlensWarning(UserWarning):
    """Base class of every warning conceptlens raises."""


class ConvergenceWarning(ConceptlensWarning):
    """An iterative explanation (e.g. integrated gradients) stopped before it converged.

    Like scikit-learn's warning of the same name: the result is returned, but its evidence
    (completeness gap, steps) says it is not to be trusted as is.
    """


class BaselineWarning(ConceptlensWarning):
    """The attribution baseline is not neutral for the target (e.g. scored on the same side
    of the decision as the input), so the attribution explains "more than the baseline",
    not "why"."""


class DeprecatedNameWarning(ConceptlensWarning, FutureWarning):
    """A name (function, argument, attribute) was renamed; the old one still works for one
    release. Shown by default, like scikit-learn's ``FutureWarning`` for deprecations."""


class InputQualityWarning(ConceptlensWarning):
    """An input the model should not be trusted on (too small, constant, grayscale for a
    colour model, extreme exposure, out of distribution)."""


class ScoreSpaceMismatchError(ConceptlensError, ValueError):
    """A fitted bottleneck is combined with concept scores from another score space
    (other transform, calibration, mode or vocabulary) than the one it was fitted on."""


class _MessageKeyError(KeyError):
    """A ``KeyError`` whose ``str`` is its message (``KeyError`` would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownConceptError(ConceptlensError, _MessageKeyError, ValueError):
    """A concept id or name that the vocabulary (or the model's columns) does not hold.

    The one class for every concept lookup in the library; a ``KeyError`` (and a
    ``ValueError``, for code that validates arguments).
    """


class UnknownClassError(ConceptlensError, _MessageKeyError):
    """A class label that the bottleneck was not fitted on (the message lists the known ones)."""


class VocabularyMismatchError(ConceptlensError, ValueError):
    """Scores come from a different concept vocabulary than the one a model was fitted on."""

