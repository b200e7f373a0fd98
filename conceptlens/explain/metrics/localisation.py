"""Deprecated module name: use :mod:`conceptlens.explain.metrics.localization`."""

from conceptlens._deprecation import warn_renamed
from conceptlens.explain.metrics.localization import *  # noqa: F403
from conceptlens.explain.metrics.localization import __all__  # noqa: F401

warn_renamed(__name__, "conceptlens.explain.metrics.localization")
