"""The work behind each ``conceptlens`` sub-command (``run_<handler>(args)``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "run_audit",
    "run_demo",
    "run_explain",
    "run_fit",
    "run_score",
    "run_vocab_convert",
    "run_vocab_list",
    "run_vocab_show",
    "run_vocab_validate",
]


def _vocabulary(spec: str | None, model: str | None = None):
    from conceptlens.vocab import ConceptVocabulary

    if spec is None:
        if model in (None, "demo"):
            return ConceptVocabulary.builtin("demo")
        raise ValueError("--vocab is required with a model other than the demo model")
    path = Path(spec)
    if path.suffix or path.exists():
        return ConceptVocabulary.from_file(path)
    return ConceptVocabulary.builtin(spec)


def _backbone(args: argparse.Namespace):
    from conceptlens.models import load_backbone

    return load_backbone(args.model, device=args.device, dtype=args.dtype,
                         trust_remote_code=getattr(args, "trust_remote_code", False))


def _scorer_for_bottleneck(scorer: Any, bottleneck: Any) -> Any:
    """The scorer with the settings the bottleneck's training scores were made with.

    A bottleneck only means something on scores made like its training scores; where it
    recorded them (``score_space_``), the explanation uses them.
    """
    space = dict(getattr(bottleneck, "score_space_", None) or {})
    templates = space.pop("templates", None)
    if templates is not None and all(isinstance(t, str) for t in templates):
        space["templates"] = tuple(templates)
    return scorer.with_config(**space) if space else scorer


def _scorer(args: argparse.Namespace, backbone: Any, vocabulary: Any):
    from conceptlens.vocab import ConceptScorer

    options = {"batch_size": args.batch_size, "cache_dir": args.cache_dir, "progress": not args.quiet}
    templates = getattr(args, "templates", None)
    if templates:
        options["templates"] = list(templates)
    elif not vocabulary.has_prompt_templates and not getattr(args, "preset", None):
        from conceptlens.vocab.prompts import TEMPLATES

        raise ValueError(
            f"vocabulary {vocabulary.name!r} has modality {vocabulary.modality!r}, for which "
            f"conceptlens has no prompt templates (known: {', '.join(sorted(TEMPLATES))}); "
            "pass --template 'TEXT with {concept}' or set a known modality"
        )
    preset = getattr(args, "preset", None)
    if preset:
        return ConceptScorer.from_preset(preset, backbone, vocabulary, **options)
    if hasattr(args, "mode"):
        options.update(mode=args.mode, alpha=args.alpha, calibration=args.calibration,
                       aggregation=args.aggregation)
    return ConceptScorer(backbone, vocabulary, **options)


def _column_for(path: str, column: str, index: pd.Index, what: str) -> np.ndarray:
    """The ``column`` of a labels / decisions table, aligned to the score rows: rows are
    matched by id, relative path or file name (``conceptlens._io.image_keys``; the key
    columns are ``IMAGE_KEY_COLUMNS``), and any ambiguity is an error naming the line."""
    from conceptlens._io.image_keys import read_aligned_column

    return read_aligned_column(path, column, [str(i) for i in index], what=what)


def _image_sources(items: list[str], frame: int | None = None) -> Any:
    """The images to score as ``ImageSource`` items (ids: see ``conceptlens.vocab.sources``).

    One folder / manifest / file keeps its own ids (a folder's are relative to it); with
    several inputs, a folder's ids are prefixed by the folder as given, so they stay unique.
    """
    from conceptlens.vocab.sources import ImageSource, iter_image_sources

    sources: list[ImageSource] = []
    for item in items:
        path = Path(item)
        if path.suffix.lower() in {".csv", ".tsv"} and len(items) > 1:
            raise ValueError(f"{item}: pass a CSV manifest on its own, not with other images")
        for source in iter_image_sources(item, frame=frame):
            if len(items) > 1 and path.is_dir():
                source = replace(source, image_id=f"{path.as_posix().rstrip('/')}/{source.image_id}")
            sources.append(source)
    return sources


def _load_scores(path: str):
    from conceptlens.vocab import ConceptScores

    return ConceptScores.load(path)


def _report_errors(errors: pd.DataFrame) -> None:
    for row in errors.itertuples(index=False):
        print(f"conceptlens: skipped {row.image}: {row.reason}", file=sys.stderr)


def _report_input_warnings(frame: pd.DataFrame) -> None:
    """One plain line per input warning (scored, but not to be trusted), like skipped images."""
    for row in frame.itertuples(index=False):
        print(f"conceptlens: warning {row.image_id}: {row.kind}: {row.message}", file=sys.stderr)


@contextlib.contextmanager
def _input_warnings_as_lines() -> Iterator[None]:
    """Print the scorer's InputQualitySummary warnings as per-image lines; pass others on."""
    from conceptlens.vocab.input_checks import InputQualitySummary

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        if isinstance(item.message, InputQualitySummary):
            _report_input_warnings(item.message.warnings)
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


# ---------------------------------------------------------------------------- score
def run_score(args: argparse.Namespace) -> None:
    """Score images against a vocabulary and write a parquet / CSV score table (``score``)."""
    out = Path(args.out)
    if out.suffix not in {".parquet", ".csv"}:
        raise ValueError(f"--out {out} must end in .parquet or .csv")
    engine, address = getattr(args, "engine", "local"), getattr(args, "address", None)
    if address is not None and engine != "ray":
        raise ValueError("--address is only used with --engine ray")
    backbone = _backbone(args)
    vocabulary = _vocabulary(args.vocab, args.model)
    scorer = _scorer(args, backbone, vocabulary)
    sources = _image_sources(args.images, args.frame)
    if out.suffix == ".parquet":
        # written batch by batch (one row group each), so memory stays flat
        with _input_warnings_as_lines():
            written = scorer.score_to_file(sources, out, engine=engine, address=address)
        count, errors, flagged = written.n_images, written.errors, len(set(written.warnings["image_id"]))
        if count == 0:
            out.unlink(missing_ok=True)
    else:
        with _input_warnings_as_lines():
            scores = scorer.score(sources, engine=engine, address=address)
        count, errors, flagged = len(scores), scores.errors, len(scores.flagged_ids)
    _report_errors(errors)
    if count == 0:
        raise ValueError("no image could be scored (see the errors above)")
    if out.suffix != ".parquet":
        scores.save(out)
    if len(errors):
        from conceptlens._io.tables import write_csv

        write_csv(errors, out.with_name(out.stem + ".errors.csv"), index=False,
                  what="error list")
    print(f"scored {count} image(s) x {len(vocabulary)} concepts -> {out}"
          + (f" ({len(errors)} skipped)" if len(errors) else "")
          + (f" ({flagged} with input warnings)" if flagged else ""))


# ---------------------------------------------------------------------------- fit
def run_fit(args: argparse.Namespace) -> None:
    """Fit a concept bottleneck on a score table and labels and save it (``fit``)."""
    from conceptlens.concepts import AssociationBottleneck, SparseLinearBottleneck

    scores = _load_scores(args.scores)
    labels = _column_for(args.labels, args.label_column, scores.table.index, "labels")
    if args.kind == "sparse":
        model = SparseLinearBottleneck(l1_ratio=args.l1_ratio, max_concepts=args.max_concepts)
    else:
        model = AssociationBottleneck()
    model.fit(scores, labels)
    path = model.save(args.out)
    acc = float(np.mean(model.predict(scores) == labels))
    print(f"fitted {type(model).__name__} on {len(scores)} images; training accuracy {acc:.3f} -> {path}")


# ---------------------------------------------------------------------------- explain
def run_explain(args: argparse.Namespace) -> None:
    """Explain images and write ``NAME.html`` + ``NAME.json`` into ``--out`` (``explain``)."""
    from conceptlens.explain.report.workflows import explain_images, model_notice

    backbone = _backbone(args)
    vocabulary = _vocabulary(args.vocab, args.model)
    scorer = _scorer(args, backbone, vocabulary)
    bottleneck = None
    if args.bottleneck:
        from conceptlens.concepts import load_bottleneck

        bottleneck = load_bottleneck(args.bottleneck)
        scorer = _scorer_for_bottleneck(scorer, bottleneck)
    with _input_warnings_as_lines():
        report, errors = explain_images(scorer, _image_sources(args.images, args.frame), bottleneck=bottleneck,
                                        method=args.method, top_k=args.top_k, n_steps=args.n_steps,
                                        notice=model_notice(backbone))
    _report_errors(errors)
    html_path, json_path = report.save(args.out, args.name)
    print(f"explanation report -> {html_path} (numbers in {json_path.name})"
          + (f"; {len(errors)} image(s) skipped" if len(errors) else ""))


# ---------------------------------------------------------------------------- audit
def run_audit(args: argparse.Namespace) -> None:
    """Audit a decision-maker and write ``NAME.html`` + ``NAME.json`` into ``--out`` (``audit``)."""
    from conceptlens.concepts import audit
    from conceptlens.explain.report import audit_report
    from conceptlens.vocab import evaluate_annotation

    scores = _load_scores(args.scores)
    index = scores.table.index
    decisions = _column_for(args.decisions, args.decision_column, index, "decisions")
    labels = None
    if args.labels:
        labels = _column_for(args.labels, args.label_column, index, "labels")
    irrelevant = [c for c in args.irrelevant.split(",") if c]
    expected = [c for c in args.expected.split(",") if c]
    for concept in irrelevant + expected:
        if concept not in scores.table.columns:
            raise ValueError(f"concept {concept!r} (from --irrelevant/--expected) is not a column of {args.scores}")
    result = audit(scores, decisions, labels, irrelevant_concepts=irrelevant or None,
                   expected_concepts=expected or None)
    annotation = None
    if args.concept_labels:
        from conceptlens._io.image_keys import read_aligned_frame

        concept_labels = read_aligned_frame(args.concept_labels, [str(i) for i in index],
                                            what="concept labels")
        annotation = evaluate_annotation(scores, concept_labels, n_bootstrap=200)
    images = _thumbnail_files(index, args.images)
    report = audit_report(result, scores=scores, decisions=decisions, labels=labels, annotation=annotation,
                          images=images or None)
    html_path, json_path = report.save(args.out, args.name)
    print(f"audit report -> {html_path} (numbers in {json_path.name})")


# ---------------------------------------------------------------------------- report
def run_report(args: argparse.Namespace) -> None:
    """Write the data-set report ``NAME.html`` + ``NAME.json`` into ``--out`` (``report``)."""
    from conceptlens.concepts import load_bottleneck
    from conceptlens.explain.report import dataset_report
    from conceptlens.explain.report.workflows import model_notice

    scores = _load_scores(args.scores)
    labels = _column_for(args.labels, args.label_column, scores.table.index, "labels")
    bottleneck = load_bottleneck(args.bottleneck)
    images = _thumbnail_files(scores.table.index, args.images)
    scorer = notice = None
    if images:
        backbone = _backbone(args)
        notice = model_notice(backbone)
        scorer = _scorer_for_bottleneck(_scorer(args, backbone, _vocabulary(args.vocab, args.model)), bottleneck)
    with _input_warnings_as_lines():
        report = dataset_report(scores, bottleneck, labels, scorer=scorer, images=images or None,
                                n_cases=args.cases, method=args.method, n_steps=args.n_steps, notice=notice)
    html_path, json_path = report.save(args.out, args.name)
    print(f"data-set report -> {html_path} (numbers in {json_path.name})")


def _thumbnail_files(index: pd.Index, root: str | None) -> dict[str, str]:
    """Image id -> file for the audit's thumbnails: only with ``--images ROOT``, and only ids
    that resolve to a file inside ROOT (``..``, absolute ids pointing elsewhere and symbolic
    links leading out of it are not embedded)."""
    if root is None:
        return {}
    base = Path(root).resolve()
    if not base.is_dir():
        raise NotADirectoryError(f"--images {root}: not a folder")
    found = {}
    for image_id in index:
        candidate = (base / str(image_id).lstrip("/")).resolve()
        if candidate.is_relative_to(base) and candidate.is_file():
            found[str(image_id)] = str(candidate)
    return found


# ---------------------------------------------------------------------------- compare
def run_compare(args: argparse.Namespace) -> None:
    """Score the same images with several models and compare their concept annotation
    (``compare``) -> ``NAME.html`` + ``NAME.json``."""
    from conceptlens._io.image_keys import read_aligned_frame
    from conceptlens.explain.report.comparison import comparison_report
    from conceptlens.models import load_backbone
    from conceptlens.vocab.comparison import compare_backbones

    models = list(args.models or [])
    if len(models) < 2:
        raise ValueError("compare needs at least two models: --model A --model B")
    vocabulary = _vocabulary(args.vocab, "demo" if "demo" in models else models[0])
    sources = _image_sources(args.images, args.frame)
    labels = read_aligned_frame(args.concept_labels, [s.image_id for s in sources],
                                what="concept labels")
    backbones = {  # folders are shown by their own name, not the whole path
        (Path(name).name if Path(name).exists() else name): load_backbone(
            name, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
        for name in dict.fromkeys(models)
    }
    options: dict[str, Any] = {"batch_size": args.batch_size, "mode": args.mode,
                               "alpha": args.alpha, "calibration": args.calibration,
                               "aggregation": args.aggregation}
    if args.templates:
        options["templates"] = list(args.templates)
    comparison = compare_backbones(backbones, vocabulary, sources, labels, cache_dir=args.cache_dir,
                                   n_bootstrap=args.n_bootstrap, progress=not args.quiet, **options)
    report = comparison_report(comparison, vocabulary={"name": vocabulary.name,
                                                       "concepts": len(vocabulary)})
    html_path, json_path = report.save(args.out, args.name)
    pooled = comparison.pooled["roc_auc"]
    print("pooled annotation AUC: " + ", ".join(f"{m} {v:.3f}" for m, v in pooled.items())
          + f" -> {html_path} (+ {json_path.name})")


# ---------------------------------------------------------------------------- vocab
def run_vocab_list(args: argparse.Namespace) -> None:
    """Print the built-in vocabularies (``vocab list``)."""
    from conceptlens.vocab import ConceptVocabulary, list_vocabularies

    for name in list_vocabularies():
        vocab = ConceptVocabulary.builtin(name)
        print(f"{name:24s} {len(vocab):4d} concepts  {vocab.description}")


def run_vocab_show(args: argparse.Namespace) -> None:
    """Print a vocabulary's concepts (``vocab show``)."""
    vocab = _vocabulary(args.vocabulary)
    print(f"{vocab.name}: {len(vocab)} concepts, hash {vocab.hash}")
    for concept in vocab:
        synonyms = f" (also: {', '.join(concept.synonyms)})" if concept.synonyms else ""
        print(f"  {concept.id:40s} {concept.name}{synonyms}")


def run_vocab_validate(args: argparse.Namespace) -> None:
    """Check a vocabulary file; a problem raises an error naming it (``vocab validate``)."""
    from conceptlens.vocab import ConceptVocabulary

    vocab = ConceptVocabulary.from_file(args.vocabulary)
    print(f"{args.vocabulary}: valid, {len(vocab)} concepts, hash {vocab.hash}")
    if not vocab.has_prompt_templates:
        print(f"{args.vocabulary}: note: no prompt templates for modality {vocab.modality!r}; "
              "'conceptlens score' needs --template for it")


def run_vocab_convert(args: argparse.Namespace) -> None:
    """Convert a vocabulary to the format of the target file's suffix (``vocab convert``)."""
    vocab = _vocabulary(args.source)
    path = vocab.to_file(args.target)
    print(f"wrote {len(vocab)} concepts -> {path or args.target}")


# ---------------------------------------------------------------------------- demo
def run_demo(args: argparse.Namespace) -> None:
    """Run the whole chain on the demo model and print the headline numbers (``demo``)."""
    from conceptlens.cli.demo import run_demo as demo

    summary = demo(args.out, n=args.n, n_explain=args.n_explain, seed=args.seed,
                   progress=not args.quiet)
    _report_input_warnings(pd.DataFrame(summary.get("input_warnings") or [],
                                        columns=["image_id", "kind", "message"]))
    print(json.dumps(summary["headline"], indent=2))
    print(f"reports and summary -> {summary['out']}")
