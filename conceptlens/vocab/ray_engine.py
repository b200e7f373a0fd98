"""Scoring across machines with Ray Data (extra ``ray``): ``ConceptScorer.score(..., engine="ray")``.

The driver expands the input (a folder, a manifest, paths or in-memory images) into rows
``(position, image_id, path, frame, image_bytes)`` and hands them to Ray Data, which runs
:class:`ScoringActor` in a pool: one actor per GPU where the cluster has GPUs, else CPU actors
(two by default). Each actor holds a copy of the scorer (backbone, text bank, configuration),
and runs exactly the single-process code on its batches: the same host pipeline
(:class:`~conceptlens.vocab.stream.ImageStream`: each file opened and decoded once, the
feature store consulted first), the same forward and the same scoring, so the numbers equal
the single-process path's. With a feature store, each actor appends its own shards to it
(the store takes concurrent writers; across machines, put the store on a shared file
system) and commits them when Ray shuts the actor down. Scores come back to the driver in
input order.

``ray.init()`` (a local Ray) is used when Ray is not initialised yet; pass ``address=`` (or
call ``ray.init(address=...)`` first) to use a cluster. In-memory images are sent to the
actors as lossless PNG bytes (identical pixels, so identical store keys and scores).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from conceptlens.errors import ConceptlensError
from conceptlens.vocab.sources import ImageSource, iter_image_sources

__all__ = ["RayUnavailableError", "ScoringActor", "iter_scored_with_ray"]


class RayUnavailableError(ConceptlensError, ImportError):
    """``engine="ray"`` without Ray installed (``pip install 'conceptlens[ray]'``)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise RayUnavailableError(
            "engine='ray' needs Ray Data: pip install 'conceptlens[ray]' (ray[data] 2.60)"
        ) from error
    return ray


def _rows(images: Any) -> list[dict[str, Any]]:
    rows = []
    for position, source in enumerate(iter_image_sources(images)):
        data = b""
        if source.path is None:
            try:
                buffer = io.BytesIO()
                source.load().image.save(buffer, format="PNG")
                data = buffer.getvalue()
            except Exception as error:  # noqa: BLE001 - reported like any bad image
                rows.append({"position": position, "image_id": source.image_id, "path": "",
                             "frame": -1, "image_bytes": b"", "load_error": str(error) or
                             type(error).__name__})
                continue
        rows.append({"position": position, "image_id": source.image_id, "path": source.path or "",
                     "frame": -1 if source.frame is None else int(source.frame),
                     "image_bytes": data, "load_error": ""})
    return rows


def _source(row: dict[str, Any]) -> ImageSource:
    from conceptlens.models.images import load_image

    image_id, path, frame = str(row["image_id"]), str(row["path"]), int(row["frame"])
    error = str(row["load_error"])
    if error:
        def fail() -> Any:
            raise ValueError(error)
        return ImageSource(image_id, fail)
    if path:
        if frame >= 0:
            return ImageSource(image_id, lambda: load_image(path, default_frame=frame), path=path,
                               frame=frame)
        return ImageSource(image_id, lambda: load_image(path), path=path)
    data = bytes(row["image_bytes"])
    return ImageSource(image_id, lambda: load_image(data))


class ScoringActor:
    """A Ray Data actor: a scorer copy that scores batches of rows (see the module docstring).

    Args:
        payload: ``(scorer, bank_key, text_bank)`` or a Ray object reference to it.
    """

    def __init__(self, payload: Any) -> None:
        import torch

        from conceptlens.vocab.textbank import memo_for

        ray = _ray()
        if isinstance(payload, ray.ObjectRef):
            payload = ray.get(payload)
        scorer, key, bank = payload
        if ray.get_gpu_ids() and torch.cuda.is_available():
            scorer.backbone.model.to("cuda")
        memo_for(scorer.backbone)[key] = bank
        self.scorer = scorer

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from conceptlens.vocab.batching import DirectSink, encode_records
        from conceptlens.vocab.stream import ImageStream, collate_records

        scorer = self.scorer
        n = len(batch["position"])
        rows = [{name: batch[name][i] for name in batch} for i in range(n)]
        sources = [_source(row) for row in rows]
        stream = ImageStream(sources, scorer.backbone, block=max(1, n), cache=scorer.cache,
                             need_patches=scorer.needs_patches,
                             need_stats=scorer.input_checks is not None)
        records = [stream.record(i, source) for i, source in enumerate(sources)]
        errors: list[dict[str, str]] = []
        features = encode_records(
            scorer.backbone, stream, collate_records(records), cache=scorer.cache,
            sink=DirectSink(scorer.cache) if scorer.cache is not None else None,
            errors=errors, need_patches=scorer.needs_patches,
        )
        width = len(scorer.vocabulary)
        values = np.full((n, width), np.nan)
        warned: list[list[dict[str, str]]] = [[] for _ in range(n)]
        failed = {e["image"]: e["reason"] for e in errors}
        if features is not None:
            scores, found = scorer.score_batch(features)
            where = {image_id: i for i, image_id in enumerate(str(r["image_id"]) for r in rows)}
            for row, image_id in enumerate(features.image_ids):
                values[where[image_id]] = scores[row].double().numpy()
            for item in found:
                warned[where[item["image_id"]]].append(item)
        return {
            "position": np.asarray([int(r["position"]) for r in rows], dtype=np.int64),
            "image_id": np.asarray([str(r["image_id"]) for r in rows], dtype=object),
            "scores": values,
            "error": np.asarray([failed.get(str(r["image_id"]), "") for r in rows], dtype=object),
            "warnings": np.asarray([json.dumps(w) for w in warned], dtype=object),
        }

    def __del__(self) -> None:
        cache = getattr(getattr(self, "scorer", None), "cache", None)
        if cache is not None:
            try:
                cache.flush()
            except Exception:  # noqa: BLE001 - at shutdown nothing may raise
                pass


def iter_scored_with_ray(scorer: Any, images: Any, *, address: str | None = None,
                         num_workers: int | None = None,
                         errors: list[dict[str, str]]) -> Iterator[tuple[list[str], np.ndarray,
                                                                         list[dict[str, str]]]]:
    """``(ids, scores, warnings)`` per batch in input order, computed by Ray actors.

    Args:
        scorer: The :class:`~conceptlens.vocab.scorer.ConceptScorer` (its text bank is built
            here once and shipped to the actors).
        images: Anything :meth:`ConceptScorer.score` accepts.
        address: Cluster address for ``ray.init`` when Ray is not initialised yet.
        num_workers: Actors (default: one per GPU of the cluster, else 2).
        errors: Bad images are appended here.

    Raises:
        RayUnavailableError: Ray is not installed.
    """
    ray = _ray()
    from conceptlens.vocab.textbank import bank_key

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    rows = _rows(images)
    if not rows:
        return
    bank = scorer.text_bank()
    key = bank_key(scorer.backbone, scorer.vocabulary, scorer.config.prompt_key())
    payload = ray.put((scorer._copy(progress=False), key, bank))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = num_workers or (gpus if gpus else 2)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = bool(scorer.progress)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * workers)))
    batch_size = scorer.image_batch_size()
    scored = dataset.map_batches(
        ScoringActor, fn_constructor_kwargs={"payload": payload}, batch_size=batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
    )
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        order = np.argsort(batch["position"], kind="stable")
        ids: list[str] = []
        kept: list[np.ndarray] = []
        found: list[dict[str, str]] = []
        for i in order:
            image_id, error = str(batch["image_id"][i]), str(batch["error"][i])
            if error:
                errors.append({"image": image_id, "reason": error})
                continue
            ids.append(image_id)
            kept.append(batch["scores"][i])
            found.extend(json.loads(str(batch["warnings"][i])))
        if ids:
            yield ids, np.stack(kept), found
