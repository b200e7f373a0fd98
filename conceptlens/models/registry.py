"""The short names :func:`~conceptlens.models.load_backbone` knows, and how plugins add theirs.

The built-in names (``"conceptclip"``, ``"clip-vit-b16"``, ``"siglip-base"``, ...) point at
hub ids that an adapter family loads. Other packages add backbones without
``conceptlens.models`` knowing them, in one of two ways:

* at run time, with :func:`register_backbone` (``register_backbone("mine", loader)``);
* declared in their ``pyproject.toml`` under the entry-point group
  :data:`ENTRY_POINT_GROUP`, read the first time the registry is consulted::

      [project.entry-points."conceptlens.backbones"]
      mine = "mypackage.backbone:MINE"   # a BackboneSpec, or a loader function

The demo model (``load_backbone("demo")``) is such a plugin: :mod:`conceptlens.demo`
declares it, and nothing in :mod:`conceptlens.models` imports the demo package.

This module imports no adapter, so the adapters and the factory can all import it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from conceptlens.errors import ConceptlensWarning

if TYPE_CHECKING:
    import torch

    from conceptlens.models.base import Backbone

__all__ = [
    "BACKBONES",
    "ENTRY_POINT_GROUP",
    "FAMILIES",
    "BackboneLoader",
    "BackboneRegistry",
    "BackboneSpec",
    "register_backbone",
]

ENTRY_POINT_GROUP = "conceptlens.backbones"
"""Entry-point group whose entries name a :class:`BackboneSpec` or a :class:`BackboneLoader`."""

FAMILIES = ("conceptclip", "clip", "siglip", "open_clip")
"""Adapter families :func:`~conceptlens.models.load_backbone` dispatches built-in names to."""


class BackboneLoader(Protocol):
    """What a plugin's loader is called with by :func:`~conceptlens.models.load_backbone`.

    ``device`` is already resolved; ``dtype`` is passed as the caller gave it (``"auto"``,
    a name, a :class:`torch.dtype` or ``None``), so the loader decides what ``"auto"``
    means for its model (e.g. with :func:`~conceptlens.models.runtime.resolve_dtype`).
    """

    def __call__(
        self,
        *,
        device: torch.device,
        dtype: str | torch.dtype | None,
        revision: str | None,
        trust_remote_code: bool,
        token: str | bool | None,
    ) -> Backbone:
        """Load the backbone."""
        ...  # pragma: no cover - a protocol


@dataclass(frozen=True)
class BackboneSpec:
    """A short name :func:`~conceptlens.models.load_backbone` knows.

    Attributes:
        name: The short name.
        source: Hub id, ``"hf-hub:<repo>"`` for open_clip checkpoints, or (plugins) where the
            weights live, for humans.
        family: Adapter family: ``"conceptclip"``, ``"clip"``, ``"siglip"`` or ``"open_clip"``
            (source ``"hf-hub:<repo>"``; needs the ``open_clip`` extra); for a plugin, the
            family of the backbone its loader returns.
        remote_code: Whether loading runs Python code from the model repository.
        description: One line for humans.
        loader: A plugin's :class:`BackboneLoader`; ``None`` for the built-in names, which
            the adapter of ``family`` loads from ``source``.
        aliases: Other names that load the same backbone (e.g. the id it records in
            :attr:`~conceptlens.models.base.Backbone.identity`); not listed by
            :func:`~conceptlens.models.list_backbones`.
    """

    name: str
    source: str
    family: str
    remote_code: bool
    description: str
    loader: BackboneLoader | None = field(default=None, compare=False, repr=False)
    aliases: tuple[str, ...] = ()


class BackboneRegistry(MutableMapping[str, BackboneSpec]):
    """Short name -> :class:`BackboneSpec`, with aliases and lazily read entry points.

    Reading the registry (``reg[name]``, ``name in reg``, iteration, :meth:`lookup`) first
    registers every entry of the entry-point group, once. A plugin that cannot be loaded is
    skipped with a :class:`~conceptlens.errors.ConceptlensWarning` naming it.

    Args:
        specs: The built-in specs.
        entry_point_group: The group to read plugins from; ``None`` reads none.
    """

    def __init__(
        self, specs: Iterable[BackboneSpec] = (), *, entry_point_group: str | None = None
    ) -> None:
        self._specs: dict[str, BackboneSpec] = {}
        self._aliases: dict[str, str] = {}
        self._group = entry_point_group
        self._plugins_read = entry_point_group is None
        self._lock = threading.RLock()
        for spec in specs:
            self.register(spec)

    # ------------------------------------------------------------------ mapping protocol

    def __getitem__(self, name: str) -> BackboneSpec:
        self._read_plugins()
        return self._specs[name]

    def __setitem__(self, name: str, spec: BackboneSpec) -> None:
        if not isinstance(spec, BackboneSpec) or spec.name != name:
            raise ValueError(f"registry[{name!r}] must be a BackboneSpec named {name!r}")
        self.register(spec, replace=True)

    def __delitem__(self, name: str) -> None:
        self._read_plugins()
        spec = self._specs.pop(name)
        for alias in spec.aliases:
            self._aliases.pop(alias, None)

    def __iter__(self) -> Iterator[str]:
        self._read_plugins()
        return iter(list(self._specs))

    def __len__(self) -> int:
        self._read_plugins()
        return len(self._specs)

    def __repr__(self) -> str:
        return f"BackboneRegistry({sorted(self)})"

    # ------------------------------------------------------------------ registry

    def register(self, spec: BackboneSpec, *, replace: bool = False) -> BackboneSpec:
        """Add ``spec`` under its name and aliases.

        Raises:
            ValueError: The name or an alias is taken by another spec and ``replace`` is
                False.
        """
        if not isinstance(spec, BackboneSpec):
            raise TypeError(f"expected a BackboneSpec, got {type(spec).__name__}")
        with self._lock:
            for name in (spec.name, *spec.aliases):
                owner = self._aliases.get(name) or (name if name in self._specs else None)
                if owner is None or (replace and owner == spec.name):
                    continue
                if owner == spec.name:
                    raise ValueError(f"backbone {name!r} is already registered; pass "
                                     "replace=True to replace it")
                raise ValueError(f"backbone name {name!r} is taken by {owner!r}")
            old = self._specs.get(spec.name)
            if old is not None:
                for alias in old.aliases:
                    self._aliases.pop(alias, None)
            self._specs[spec.name] = spec
            for alias in spec.aliases:
                self._aliases[alias] = spec.name
        return spec

    def lookup(self, name: str) -> BackboneSpec | None:
        """The spec registered under ``name`` or an alias of it, else ``None``."""
        self._read_plugins()
        name = self._aliases.get(name, name)
        return self._specs.get(name)

    def _read_plugins(self) -> None:
        if self._plugins_read:
            return
        with self._lock:
            if self._plugins_read:
                return
            self._plugins_read = True  # before loading: a plugin may register itself
            group = self._group or ENTRY_POINT_GROUP
            for entry in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
                try:
                    self._register_entry(entry)
                except Exception as exc:  # a broken plugin must not break the built-ins
                    warnings.warn(
                        f"backbone plugin {entry.name!r} ({entry.value}) could not be "
                        f"registered and is skipped: {type(exc).__name__}: {exc}",
                        ConceptlensWarning,
                        stacklevel=3,
                    )

    def _register_entry(self, entry: metadata.EntryPoint) -> None:
        target: Any = entry.load()
        if isinstance(target, BackboneSpec):
            spec = target
        elif callable(target):
            spec = BackboneSpec(entry.name, entry.value, "plugin", False, entry.value,
                                loader=target)
        else:
            raise TypeError(f"expected a BackboneSpec or a loader, got {type(target).__name__}")
        if spec.name in self._specs and self._specs[spec.name] == spec:
            return  # the plugin registered itself while it was imported
        self.register(spec)


BACKBONES: BackboneRegistry = BackboneRegistry(
    (
        BackboneSpec(
            "conceptclip",
            "JerrryNie/ConceptCLIP",
            "conceptclip",
            True,
            "ConceptCLIP (SigLIP so400m/14 @384 + PubMedBERT); gated, needs a token",
        ),
        BackboneSpec(
            "clip-vit-b16", "openai/clip-vit-base-patch16", "clip", False, "OpenAI CLIP ViT-B/16"
        ),
        BackboneSpec(
            "clip-vit-b32", "openai/clip-vit-base-patch32", "clip", False, "OpenAI CLIP ViT-B/32"
        ),
        BackboneSpec(
            "clip-vit-l14",
            "openai/clip-vit-large-patch14",
            "clip",
            False,
            "OpenAI CLIP ViT-L/14",
        ),
        BackboneSpec(
            "siglip-base",
            "google/siglip-base-patch16-224",
            "siglip",
            False,
            "SigLIP ViT-B/16 @224",
        ),
        BackboneSpec(
            "biomedclip",
            "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            "open_clip",
            False,
            "BiomedCLIP ViT-B/16 + PubMedBERT (open_clip checkpoint; needs the open_clip extra)",
        ),
        BackboneSpec(
            "quiltnet-b32",
            "hf-hub:wisdomik/QuiltNet-B-32",
            "open_clip",
            False,
            "QuiltNet ViT-B/32, histopathology CLIP (open_clip checkpoint; open_clip extra)",
        ),
        BackboneSpec(
            "siglip-so400m",
            "google/siglip-so400m-patch14-384",
            "siglip",
            False,
            "SigLIP so400m/14 @384 (ConceptCLIP's image tower before medical training)",
        ),
    ),
    entry_point_group=ENTRY_POINT_GROUP,
)
"""Every short name :func:`~conceptlens.models.load_backbone` knows: the built-ins plus the
plugins of :data:`ENTRY_POINT_GROUP` and those added with :func:`register_backbone`."""


def register_backbone(
    name: str,
    loader: BackboneLoader,
    *,
    description: str = "",
    family: str = "plugin",
    source: str | None = None,
    remote_code: bool = False,
    aliases: Iterable[str] = (),
    replace: bool = False,
) -> BackboneSpec:
    """Make ``load_backbone(name)`` call ``loader``.

    Args:
        name: The short name (listed by :func:`~conceptlens.models.list_backbones`).
        loader: Called as ``loader(device=..., dtype=..., revision=..,
            trust_remote_code=..., token=...)``; see :class:`BackboneLoader`.
        description: One line for humans.
        family: The adapter family of what ``loader`` returns, for humans.
        source: Where the weights come from, for humans (default: the loader's name).
        remote_code: Whether loading runs Python code from a model repository.
        aliases: Other names that load the same backbone.
        replace: Replace a backbone already registered under ``name``.

    Returns:
        The registered :class:`BackboneSpec`.

    Raises:
        ValueError: ``name`` or an alias is taken and ``replace`` is False.
        TypeError: ``loader`` is not callable.

    Example:
        >>> from conceptlens.models import register_backbone
        >>> spec = register_backbone("mine", lambda **options: ..., description="my model")
        >>> spec.name, "mine" in BACKBONES
        ('mine', True)
        >>> del BACKBONES["mine"]
    """
    if not callable(loader):
        raise TypeError(f"loader must be callable, got {type(loader).__name__}")
    spec = BackboneSpec(
        name,
        source if source is not None else getattr(loader, "__qualname__", repr(loader)),
        family,
        remote_code,
        description,
        loader=loader,
        aliases=tuple(aliases),
    )
    BACKBONES._read_plugins()
    return BACKBONES.register(spec, replace=replace)
