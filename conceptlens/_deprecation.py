"""Renamed names that keep working for one release, with a :class:`DeprecatedNameWarning`.

The library spells identifiers the American way (like torch and scikit-learn); the British
names of the first release stay importable through these helpers until the next one.
This module imports nothing from the package except :mod:`conceptlens.errors`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from conceptlens.errors import DeprecatedNameWarning

__all__ = ["deprecated_alias", "deprecated_property", "renamed_parameters", "warn_renamed"]

F = TypeVar("F", bound=Callable[..., Any])

REMOVED_IN = "0.3"


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now called ``new`` (removed in :data:`REMOVED_IN`)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in conceptlens {REMOVED_IN}; use {new}",
        DeprecatedNameWarning,
        stacklevel=stacklevel,
    )


def deprecated_alias(func: F, old_name: str) -> F:
    """A function ``old_name`` that warns and calls ``func``.

    Examples:
        >>> import warnings
        >>> def randomize(x): return -x
        >>> randomise = deprecated_alias(randomize, "randomise")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     randomise(2), caught[0].category.__name__
        (-2, 'DeprecatedNameWarning')
    """

    @functools.wraps(func)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warn_renamed(f"{old_name}()", f"{func.__name__}()")
        return func(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name
    alias.__doc__ = f"Deprecated alias of :func:`{func.__name__}` (removed in {REMOVED_IN})."
    return alias  # type: ignore[return-value]


def renamed_parameters(**old_to_new: str) -> Callable[[F], F]:
    """Accept the old keyword names of a function's parameters, with a warning.

    Passing both the old and the new name is a ``TypeError``, as for any duplicate argument.

    Examples:
        >>> @renamed_parameters(colour="color")
        ... def paint(*, color="red"):
        ...     return color
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     paint(colour="blue")
        'blue'
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{func.__name__}() got both {old!r} (deprecated) and {new!r}"
                        )
                    warn_renamed(f"argument {old!r} of {func.__name__}()", repr(new))
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def deprecated_property(new: str, old: str) -> property:
    """A read-only property ``old`` that warns and returns attribute ``new``."""

    def getter(self: Any) -> Any:
        warn_renamed(f"{type(self).__name__}.{old}", f".{new}")
        return getattr(self, new)

    return property(getter, doc=f"Deprecated alias of :attr:`{new}` (removed in {REMOVED_IN}).")


def renamed_module_attributes(module: str, renames: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` serving old names of renamed functions and classes.

    Args:
        module: The module's ``__name__`` (for the error on a truly unknown name).
        renames: Old name -> new name; the new name is looked up in the module when the old
            one is accessed, with a :class:`DeprecatedNameWarning`.

    Examples:
        >>> import sys
        >>> __getattr__ = renamed_module_attributes(__name__, {"old": "new"})  # doctest: +SKIP
    """
    import importlib

    def __getattr__(name: str) -> Any:
        if name in renames:
            warn_renamed(f"{module}.{name}", renames[name])
            return getattr(importlib.import_module(module), renames[name])
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
