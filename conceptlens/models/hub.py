"""Messages for what goes wrong when a model comes from the Hugging Face hub.

Shared by the factory and the adapters (each adapter turns its own loading errors into
these messages); it imports no adapter, so every module of :mod:`conceptlens.models` can
import it.
"""

from __future__ import annotations

from conceptlens.models.errors import BackboneLoadError
from conceptlens.models.registry import BACKBONES

__all__ = ["hub_error", "remote_code_message"]


def hub_error(name: str, exc: BaseException, *, revision: str | None = None) -> BackboneLoadError:
    """Turn a hub / file error raised while loading ``name`` into one actionable message.

    Args:
        name: Hub id or folder being loaded.
        exc: The error from ``huggingface_hub`` or ``transformers``.
        revision: The revision asked for, if any.

    Returns:
        A :class:`BackboneLoadError` (raise it ``from exc``).
    """
    from huggingface_hub import errors as hf_errors

    chain = _exception_chain(exc)
    url = f"https://huggingface.co/{name}"
    local_hint = (
        "or download the model once on a machine with access and pass the local folder "
        "(config.json, weights, processor files) instead of the hub id"
    )
    if any(isinstance(e, hf_errors.GatedRepoError) for e in chain):
        reason = (
            f"{name!r} is a gated repository on the Hugging Face hub: accept its terms at {url} "
            f"with your account, then pass token='hf_...' (or log in with `hf auth login`), "
            f"{local_hint}"
        )
    elif any(isinstance(e, hf_errors.RevisionNotFoundError) for e in chain):
        reason = f"revision {revision!r} does not exist in {name!r}; check the branch, tag or commit"
    elif any(isinstance(e, hf_errors.RepositoryNotFoundError) for e in chain):
        reason = (
            f"{name!r} was not found on the Hugging Face hub: check the spelling, pass "
            f"token='hf_...' if it is private or gated, {local_hint}. "
            f"Known short names: {', '.join(sorted(BACKBONES))}"
        )
    elif any(
        isinstance(e, (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError,
                       ConnectionError, TimeoutError))
        for e in chain
    ) or _mentions_connection(chain):
        reason = (
            f"{name!r} could not be reached: the Hugging Face hub is not reachable from here "
            f"(offline mode or no network) and no copy is in the local cache. Connect and retry, "
            f"pass token='hf_...' if the repository is gated, {local_hint}"
        )
    else:
        reason = (
            f"{name!r} could not be loaded; if it is a hub id, check the name and your access "
            f"(pass token='hf_...' for gated or private repositories), {local_hint}"
        )
    return BackboneLoadError(f"{reason}. Original error: {type(exc).__name__}: {exc}")


def remote_code_message(name: str) -> str:
    """Why ``name`` needs ``trust_remote_code=True`` and how to pass it."""
    return (
        f"{name!r} needs trust_remote_code=True: ConceptCLIP's architecture (a SigLIP image "
        "tower and a PubMedBERT text tower with token heads for concept-level alignment) is "
        "not part of transformers, so the model repository ships its own Python files and "
        "loading it runs that code on this machine. Review the code (config.json's auto_map "
        "names the files), then call load_backbone(..., trust_remote_code=True); pinning "
        "revision='<commit>' keeps the code you reviewed."
    )


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _mentions_connection(chain: list[BaseException]) -> bool:
    text = " ".join(str(e) for e in chain).lower()
    return any(
        word in text
        for word in ("couldn't connect", "could not connect", "offline", "connection", "timed out")
    )
