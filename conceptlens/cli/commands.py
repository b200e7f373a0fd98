"""The work behind each ``conceptlens`` sub-command (``run_<handler>(args)``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
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


def _scorer(args: argparse.Namespace, backbone: Any, vocabulary: Any):
    from conceptlens.vocab import ConceptScorer

    options = {"batch_size": args.batch_size, "cache_dir": args.cache_dir, "progress": not args.quiet}
    preset = getattr(args, "preset", None)
    if preset:
        return ConceptScorer.from_preset(preset, backbone, vocabulary, **options)
    if hasattr(args, "mode"):
        options.update(mode=args.mode, alpha=args.alpha, calibration=args.calibration,
                       aggregation=args.aggregation)
    return ConceptScorer(backbone, vocabulary, **options)


def _read_table(path: str | Path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in {".csv", ".tsv"}:
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    raise ValueError(f"{what} file {path} must be .csv, .tsv or .parquet")


#: Columns of a labels / decisions / concept-labels CSV that hold the image id, in order of preference.
IMAGE_KEY_COLUMNS = ("image", "path", "id", "image_id")


def _image_key(frame: pd.DataFrame) -> str | None:
    return next((c for c in IMAGE_KEY_COLUMNS if c in frame.columns), None)


def _column_for(frame: pd.DataFrame, path: str, column: str, index: pd.Index) -> pd.Series:
    """The ``column`` of a CSV keyed by its image column, aligned to the score rows."""
    if column not in frame.columns:
        raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    key = _image_key(frame)
    if key is None:
        if len(frame) != len(index):
            raise ValueError(f"{path}: has no image column and {len(frame)} rows for {len(index)} scored images")
        return pd.Series(frame[column].to_numpy(), index=index)
    series = frame.set_index(frame[key].astype(str))[column]
    missing = [i for i in index if i not in series.index]
    if missing:
        raise ValueError(f"{path}: no {column!r} for {len(missing)} scored image(s), e.g. {missing[0]!r}")
    return series.loc[list(index)]


def _image_sources(items: list[str]) -> Any:
    """One folder / manifest / file is passed through; several are expanded into file paths."""
    if len(items) == 1:
        return items[0]
    from conceptlens.vocab.sources import iter_image_sources

    paths: list[str] = []
    for item in items:
        path = Path(item)
        if path.suffix.lower() in {".csv", ".tsv"}:
            raise ValueError(f"{item}: pass a CSV manifest on its own, not with other images")
        if path.is_dir():
            paths.extend(source.image_id for source in iter_image_sources(path))
        else:
            paths.append(item)
    return paths


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
    backbone = _backbone(args)
    vocabulary = _vocabulary(args.vocab, args.model)
    with _input_warnings_as_lines():
        scores = _scorer(args, backbone, vocabulary).score(_image_sources(args.images))
    _report_errors(scores.errors)
    if len(scores) == 0:
        raise ValueError("no image could be scored (see the errors above)")
    scores.save(out)
    if len(scores.errors):
        scores.errors.to_csv(out.with_name(out.stem + ".errors.csv"), index=False)
    flagged = len(scores.flagged_ids)
    print(f"scored {len(scores)} image(s) x {len(vocabulary)} concepts -> {out}"
          + (f" ({len(scores.errors)} skipped)" if len(scores.errors) else "")
          + (f" ({flagged} with input warnings)" if flagged else ""))


# ---------------------------------------------------------------------------- fit
def run_fit(args: argparse.Namespace) -> None:
    """Fit a concept bottleneck on a score table and labels and save it (``fit``)."""
    from conceptlens.concepts import AssociationBottleneck, SparseLinearBottleneck

    scores = _load_scores(args.scores)
    labels = _column_for(_read_table(args.labels, "labels"), args.labels, args.label_column,
                         scores.table.index)
    if args.kind == "sparse":
        model = SparseLinearBottleneck(l1_ratio=args.l1_ratio, max_concepts=args.max_concepts)
    else:
        model = AssociationBottleneck()
    model.fit(scores, labels.to_numpy())
    path = model.save(args.out)
    acc = float(np.mean(model.predict(scores) == labels.to_numpy()))
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
    with _input_warnings_as_lines():
        report, errors = explain_images(scorer, _image_sources(args.images), bottleneck=bottleneck,
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
    decisions = _column_for(_read_table(args.decisions, "decisions"), args.decisions,
                            args.decision_column, index).to_numpy()
    labels = None
    if args.labels:
        labels = _column_for(_read_table(args.labels, "labels"), args.labels, args.label_column, index).to_numpy()
    irrelevant = [c for c in args.irrelevant.split(",") if c]
    expected = [c for c in args.expected.split(",") if c]
    for concept in irrelevant + expected:
        if concept not in scores.table.columns:
            raise ValueError(f"concept {concept!r} (from --irrelevant/--expected) is not a column of {args.scores}")
    result = audit(scores, decisions, labels, irrelevant_concepts=irrelevant or None,
                   expected_concepts=expected or None)
    annotation = None
    if args.concept_labels:
        concept_labels = _read_table(args.concept_labels, "concept labels")
        key = _image_key(concept_labels)
        if key is not None:
            concept_labels = concept_labels.set_index(concept_labels[key].astype(str)).drop(columns=[key])
        annotation = evaluate_annotation(scores, concept_labels, n_bootstrap=200)
    images = {i: i for i in index if Path(i).exists()}
    report = audit_report(result, scores=scores, decisions=decisions, labels=labels, annotation=annotation,
                          images=images or None)
    html_path, json_path = report.save(args.out, args.name)
    print(f"audit report -> {html_path} (numbers in {json_path.name})")


# ---------------------------------------------------------------------------- vocab
def run_vocab_list(args: argparse.Namespace) -> None:
    """Print the built-in vocabularies (``vocab list``)."""
    from conceptlens.vocab import ConceptVocabulary

    for name in ConceptVocabulary.builtin_names():
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
