"""Argument parsing and error handling for the ``conceptlens`` command."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from conceptlens import __version__

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_ERROR = 0, 1  # argparse exits with 2 on usage errors


def _steps(text: str) -> int | str:
    """argparse type: ``auto`` or an int >= 1."""
    return "auto" if text.strip().lower() == "auto" else _positive_int(text)


def _int_at_least(minimum: int, text: str) -> int:
    """An int >= ``minimum`` from an argument, or argparse's usage error naming the bound."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1 (``--top-k -1`` is a usage error, not a silent no-op)."""
    return _int_at_least(1, text)


def _non_negative_int(text: str) -> int:
    """argparse type: an int >= 0 (frame indices)."""
    return _int_at_least(0, text)


def _unit_float(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def _template(text: str) -> str:
    """argparse type: a prompt template with ``{concept}`` exactly once."""
    if text.count("{concept}") != 1:
        raise argparse.ArgumentTypeError(
            f"a prompt template must contain {{concept}} exactly once, got {text!r}"
        )
    return text


def _images_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frame", type=_non_negative_int, default=None,
                        help="frame (from 0) to read from multi-frame files (multi-frame DICOM, "
                             "multi-page TIFF, animated GIF); single-frame files ignore it")
    parser.add_argument("--template", dest="templates", action="append", type=_template,
                        default=None, metavar="TEXT",
                        help="prompt template with {concept}, e.g. 'an ultrasound showing "
                             "{concept}.' (repeat for an ensemble; default: the vocabulary "
                             "modality's templates)")


def _common(parser: argparse.ArgumentParser, *, model: bool = True, out_help: str = "output folder") -> None:
    group = parser.add_argument_group("common options")
    if model:
        group.add_argument("--model", default="demo",
                           help="backbone short name, hub id or local folder (default: demo)")
        group.add_argument("--vocab", default=None,
                           help="built-in vocabulary name or vocabulary file (default: the demo vocabulary "
                                "for the demo model)")
        group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
        group.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                           help="compute dtype (default: auto = bfloat16 where the hardware runs it "
                                "natively, else float32; the demo model stays float32)")
        group.add_argument("--batch-size", type=_positive_int, default=32,
                           help="images per forward pass (default: 32)")
        group.add_argument("--cache-dir", default=None, help="folder for the image-feature cache (default: none)")
        group.add_argument("--trust-remote-code", action="store_true",
                           help="allow running the model repository's own code (needed for ConceptCLIP)")
    group.add_argument("--out", required=True, help=out_help)
    group.add_argument("--quiet", action="store_true", help="no progress bars, only errors")
    group.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``conceptlens`` command (all sub-commands)."""
    parser = argparse.ArgumentParser(
        prog="conceptlens",
        description="Explain medical vision-language models in clinical concepts.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage error. Run 'conceptlens COMMAND --help' for details.",
    )
    parser.add_argument("--version", action="version", version=f"conceptlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("score", help="score images against a concept vocabulary -> parquet/CSV",
                       description="Score images (files, folders or a CSV manifest with a 'path' column) "
                                   "against a concept vocabulary; bad images are reported and skipped.")
    p.add_argument("images", nargs="+", help="image files, folders, or CSV manifests")
    p.add_argument("--mode", default="combined", choices=["global", "local", "combined"])
    p.add_argument("--alpha", type=_unit_float, default=0.5,
                   help="weight of the global score in combined mode, in [0, 1]")
    p.add_argument("--calibration", default="sigmoid", choices=["cosine", "sigmoid", "paired_softmax"],
                   help="cosine: raw similarity; sigmoid: the model's own scale and bias (default); "
                        "paired_softmax: against the reference prompt (the authors' recipe)")
    p.add_argument("--aggregation", default="max", choices=["mean", "max", "topk"],
                   help="how patch scores become one local score (default max, RC-Align's objective)")
    p.add_argument("--preset", default=None, choices=["derm7pt"],
                   help="a published scoring protocol (overrides mode/alpha/calibration)")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process with DataLoader workers (default); ray: Ray Data "
                        "actors, one per GPU (needs the 'ray' extra), same numbers")
    p.add_argument("--address", default=None,
                   help="Ray cluster address for --engine ray (default: a local Ray)")
    _images_options(p)
    _common(p, out_help="score file to write (.parquet keeps metadata, or .csv)")
    p.set_defaults(handler="score")

    p = sub.add_parser("fit", help="fit a concept bottleneck on scores + labels -> bottleneck file",
                       description="Fit an interpretable concept bottleneck on a score table and labels.")
    p.add_argument("scores", help="score file written by 'conceptlens score' (.parquet or .csv)")
    p.add_argument("--labels", required=True,
                   help="CSV with an image column matching the score rows and a label column")
    p.add_argument("--label-column", default="label", help="name of the label column (default: label)")
    p.add_argument("--kind", default="sparse", choices=["sparse", "association"])
    p.add_argument("--max-concepts", type=_positive_int, default=None,
                   help="sparse: at most this many concepts per class (best model on the path)")
    p.add_argument("--l1-ratio", type=float, default=1.0,
                   help="sparse: 1.0 is the L1 (lasso) penalty, below 1 elastic net (default: 1.0)")
    _common(p, model=False, out_help="folder to write the bottleneck into (JSON + npz, no pickle)")
    p.set_defaults(handler="fit")

    p = sub.add_parser("explain", help="explain images -> HTML + JSON explanation report",
                       description="Score images, predict with a fitted bottleneck, and write an "
                                   "explanation report with concept contributions, maps and attributions.")
    p.add_argument("images", nargs="+", help="image files, folders, or CSV manifests")
    p.add_argument("--bottleneck", default=None, help="bottleneck file from 'conceptlens fit' (optional)")
    p.add_argument("--method", default="integrated_gradients",
                   help="attribution method (integrated_gradients, saliency, gradient_shap, occlusion, grad_cam...)")
    p.add_argument("--top-k", type=_positive_int, default=4, help="concepts shown per image (default: 4)")
    p.add_argument("--n-steps", type=_steps, default="auto",
                   help="integration steps of path methods: 'auto' (default: doubled until the "
                        "attributions sum to f(x) - f(baseline) within 5%%) or a whole number")
    p.add_argument("--name", default="explanation", help="report file stem (default: explanation)")
    _images_options(p)
    _common(p)
    p.set_defaults(handler="explain")

    p = sub.add_parser("audit", help="audit a decision-maker's decisions -> HTML + JSON audit report",
                       description="Explain any model's (or reader's) decisions through concept scores.")
    p.add_argument("scores", help="score file written by 'conceptlens score'")
    p.add_argument("--decisions", required=True, help="CSV with image and decision columns")
    p.add_argument("--decision-column", default="decision")
    p.add_argument("--labels", default=None, help="CSV with image and label columns (optional)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--concept-labels", default=None,
                   help="CSV of 0/1 concept annotations (image column + concept id columns) for annotation AUC")
    p.add_argument("--irrelevant", default="",
                   help="comma-separated concept ids that should not drive the decisions")
    p.add_argument("--expected", default="", help="comma-separated concept ids expected to drive the decisions")
    p.add_argument("--images", default=None, metavar="FOLDER",
                   help="folder the scored images live in; thumbnails are embedded only for ids "
                        "that resolve to files inside it (default: no thumbnails, so a score "
                        "table from someone else cannot pull local files into the report)")
    p.add_argument("--name", default="audit", help="report file stem (default: audit)")
    _common(p, model=False)
    p.set_defaults(handler="audit")

    p = sub.add_parser("report", help="data-set report of a bottleneck on labelled scores -> dataset.html + .json",
                       description="What drives each class across a data set, the confusion matrix, the "
                                   "errors grouped by the concept that explains them, and (with --images) "
                                   "a gallery of correct and wrong cases with maps and attributions.")
    p.add_argument("scores", help="score file written by 'conceptlens score' (the bottleneck's vocabulary)")
    p.add_argument("--bottleneck", required=True, help="bottleneck folder from 'conceptlens fit'")
    p.add_argument("--labels", required=True, help="CSV with image and label columns")
    p.add_argument("--label-column", default="label")
    p.add_argument("--images", default=None, metavar="FOLDER",
                   help="folder the scored images live in: enables the gallery of cases (only ids "
                        "that resolve to files inside it are read)")
    p.add_argument("--cases", type=_positive_int, default=4,
                   help="representative cases in the gallery (default: 4)")
    p.add_argument("--method", default="integrated_gradients", help="attribution method of the gallery")
    p.add_argument("--n-steps", type=_steps, default="auto",
                   help="integration steps of path methods: 'auto' (default) or a whole number")
    p.add_argument("--name", default="dataset", help="report file stem (default: dataset)")
    _common(p)
    p.set_defaults(handler="report")

    p = sub.add_parser("compare", help="compare models on concept annotation -> comparison.html + .json",
                       description="Score the same images with several models (--model A --model B ...) "
                                   "and compare their concept annotation against 0/1 concept labels: "
                                   "per-concept and pooled AUC with bootstrap intervals and paired tests.")
    p.add_argument("images", nargs="+", help="image files, folders, or CSV manifests")
    p.add_argument("--model", dest="models", action="append", required=True, metavar="MODEL",
                   help="a model to compare (repeat: --model demo --model open_clip:ViT-B-32 ...)")
    p.add_argument("--concept-labels", required=True,
                   help="CSV of 0/1 concept labels: an image column + one column per concept id")
    p.add_argument("--vocab", default=None,
                   help="built-in vocabulary name or vocabulary file (default: the demo vocabulary "
                        "when the demo model is compared)")
    p.add_argument("--n-bootstrap", type=_non_negative_int, default=1000,
                   help="bootstrap resamples of the images (default: 1000)")
    p.add_argument("--mode", default="combined", choices=["global", "local", "combined"])
    p.add_argument("--alpha", type=_unit_float, default=0.5)
    p.add_argument("--calibration", default="sigmoid", choices=["cosine", "sigmoid", "paired_softmax"])
    p.add_argument("--aggregation", default="max", choices=["mean", "max", "topk"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="compute dtype of every model (default: auto)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--cache-dir", default=None,
                   help="feature-cache folder shared by the models (each keyed by its identity)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow running model repositories' own code (needed for ConceptCLIP)")
    p.add_argument("--name", default="comparison", help="report file stem (default: comparison)")
    _images_options(p)
    _common(p, model=False)
    p.set_defaults(handler="compare")

    p = sub.add_parser("vocab", help="list, show, validate or convert concept vocabularies",
                       description="Work with concept vocabularies (YAML, JSON, CSV, OBO).")
    vsub = p.add_subparsers(dest="vocab_command", metavar="ACTION", required=True)
    q = vsub.add_parser("list", help="list the built-in vocabularies")
    q.set_defaults(handler="vocab_list")
    q = vsub.add_parser("show", help="print a vocabulary's concepts")
    q.add_argument("vocabulary", help="built-in name or file")
    q.set_defaults(handler="vocab_show")
    q = vsub.add_parser("validate", help="check a vocabulary file; errors name the line or concept")
    q.add_argument("vocabulary", help="vocabulary file")
    q.set_defaults(handler="vocab_validate")
    q = vsub.add_parser("convert", help="convert between YAML, JSON, CSV and OBO")
    q.add_argument("source", help="built-in name or input file")
    q.add_argument("target", help="output file; the format follows its suffix")
    q.set_defaults(handler="vocab_convert")
    for q in vsub.choices.values():
        q.add_argument("--debug", action="store_true", help="show full tracebacks on errors")

    p = sub.add_parser("demo", help="run the whole chain on the shipped demo model and synthetic data",
                       description="Generate synthetic dermoscopy images, score them with the demo model, "
                                   "fit a sparse bottleneck, explain a few images and audit it; writes "
                                   "reports and a JSON summary into --out.")
    p.add_argument("--n", type=_positive_int, default=400,
                   help="held-out images to generate (default: 400)")
    p.add_argument("--n-explain", type=_positive_int, default=3,
                   help="images in the explanation report (default: 3)")
    p.add_argument("--seed", type=int, default=2026, help="seed of the held-out sample")
    _common(p, model=False)
    p.set_defaults(handler="demo")
    return parser


def _quiet_libraries() -> None:
    """Silence third-party progress bars and info logs (``--quiet``)."""
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def _one_line(exc: BaseException) -> str:
    """The first line of an error, with raw OS errors (``[Errno 13] ...``) put in words."""
    from conceptlens._io.files import describe_os_error
    from conceptlens.errors import ConceptlensError

    if isinstance(exc, OSError) and not isinstance(exc, ConceptlensError) and exc.errno:
        text = describe_os_error(exc)
    else:
        text = str(exc).strip()
        if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
            text = exc.args[0]
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by the console script)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for usage errors
        return int(exc.code or 0)
    if getattr(args, "quiet", False):
        _quiet_libraries()
    from conceptlens.cli import commands

    handler = getattr(commands, f"run_{args.handler}")
    try:
        handler(args)
    except KeyboardInterrupt:
        print("conceptlens: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the CLI turns every failure into one line
        if getattr(args, "debug", False):
            traceback.print_exc()
        message = _one_line(exc)
        print(f"conceptlens {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
