"""A self-contained HTML report plus the JSON file holding every number it shows.

A :class:`Report` is a title, an optional notice and a list of sections. Each section is
one of a few kinds (key-value facts, a table, figures, an image gallery, free text); the
jinja2 template renders them with autoescaping on, and :meth:`Report.to_dict` gives the
same content as JSON-ready data, so the page and its JSON never disagree.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from conceptlens._jsonable import jsonable

__all__ = [
    "Contents",
    "Facts",
    "Summary",
    "interval",
    "rounded",
    "Figures",
    "Gallery",
    "Report",
    "Section",
    "Table",
    "Text",
    "figure_to_data_uri",
    "image_to_data_uri",
]


_ANCHOR = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,80}")


def figure_to_data_uri(fig: Any, *, dpi: int = 110) -> str:
    """Render a matplotlib figure to a ``data:image/png;base64,...`` URI and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_to_data_uri(image: Image.Image | np.ndarray, *, max_side: int | None = 512,
                      format: str = "PNG", quality: int = 85) -> str:
    """Encode an image as a data URI, shrunk so its longer side is at most ``max_side``.

    Args:
        image: PIL image or ``(H, W[, C])`` uint8 array.
        max_side: Longest side in pixels after shrinking; ``None`` keeps the size.
        format: ``"PNG"`` (lossless) or ``"JPEG"`` (small thumbnails).
        quality: JPEG quality.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image))
    image = image.convert("RGB")
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    fmt = format.upper()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
        mime = "jpeg"
    elif fmt == "PNG":
        image.save(buffer, format="PNG", optimize=True)
        mime = "png"
    else:
        raise ValueError(f"unsupported image format {format!r}: use 'PNG' or 'JPEG'")
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _format_cell(value: Any, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return "–"
        if f != 0 and (abs(f) < 10 ** (-digits) or abs(f) >= 1e6):
            return f"{f:.{digits}g}"
        return f"{f:.{digits}f}"
    return "" if value is None else str(value)


def rounded(value: Any, digits: int = 2) -> str:
    """A number as a reader wants it: ``digits`` significant digits, integers whole.

    Examples:
        >>> rounded(0.97777), rounded(3.2e-19), rounded(12), rounded(None)
        ('0.98', '3.2e-19', '12', '–')
    """
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    f = float(value)
    if math.isnan(f):
        return "–"
    if f == 0:
        return "0"
    if abs(f) < 1e-3 or abs(f) >= 1e6:
        return f"{f:.{digits}g}".replace("e-0", "e-").replace("e+0", "e+")
    magnitude = math.floor(math.log10(abs(f)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{f:.{decimals}f}"


def interval(value: Any, low: Any, high: Any, digits: int = 2) -> str:
    """An estimate with its interval, ``"0.97 (0.89-0.99)"`` (decimals shared by all three).

    Examples:
        >>> interval(0.9777, 0.9225, 0.9938)
        '0.98 (0.92-0.99)'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if low is None or high is None:
        return rounded(value, digits)
    return f"{float(value):.{digits}f} ({float(low):.{digits}f}-{float(high):.{digits}f})"


@dataclass
class Section:
    """Base of the report's building blocks: a heading and an optional caption.

    ``collapsed`` sections (settings, provenance) render inside a closed ``<details>`` box.
    ``anchor`` (letters, digits, ``-`` and ``_`` only) becomes the section's ``id`` so that a
    :class:`Contents` block can link to it.
    """

    title: str
    caption: str = ""
    kind: str = field(default="text", init=False)
    collapsed: bool = field(default=False, kw_only=True)
    anchor: str = field(default="", kw_only=True)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "anchor" and value and not _ANCHOR.fullmatch(str(value)):
            raise ValueError(f"anchor must be letters, digits, '-' or '_' (starting with a letter), "
                             f"got {value!r}")
        super().__setattr__(name, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content of the section: ``kind``, ``title``, ``caption`` (and ``anchor``)."""
        out = {"kind": self.kind, "title": self.title, "caption": self.caption}
        if self.anchor:
            out["anchor"] = self.anchor
        return out


@dataclass
class Summary(Section):
    """The findings-first block at the top of a report (rendered with ``id="summary"``).

    Args:
        headline: The main finding in one plain sentence.
        points: Further findings, one plain sentence each.
        numbers: Human label -> key number, shown as given (already rounded text) on the page;
            ``values`` holds the unrounded numbers for the JSON twin.
        values: Human label -> the exact value(s) behind ``numbers`` (JSON only).
    """

    headline: str = ""
    points: list[str] = field(default_factory=list)
    numbers: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = "summary"

    def _repr_html_(self) -> str:
        esc = html.escape
        points = "".join(f"<li>{esc(p)}</li>" for p in self.points)
        numbers = " &middot; ".join(f"{esc(k)}: <b>{esc(v)}</b>" for k, v in self.numbers.items())
        return (f'<div style="border-left:4px solid #0072b2;padding:.2rem .8rem">'
                f"<p><b>{esc(self.headline)}</b></p><ul>{points}</ul><p>{numbers}</p></div>")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content: headline, points, the numbers as shown and their exact values."""
        return {**super().to_dict(), "headline": self.headline, "points": list(self.points),
                "numbers": dict(self.numbers), "values": jsonable(dict(self.values))}


@dataclass
class Contents(Section):
    """A table of contents: links to anchored sections further down the page.

    Args:
        entries: One dict per link: ``anchor`` (the target section's :attr:`Section.anchor`),
            ``label`` (the link text) and optionally ``details`` (a short plain line shown
            after the link, e.g. the prediction and confidence).

    Examples:
        >>> c = Contents("Images", entries=[{"anchor": "image-1", "label": "a.png"}])
        >>> c.to_dict()["entries"][0]["anchor"]
        'image-1'
    """

    entries: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kind = "contents"
        for entry in self.entries:
            if not _ANCHOR.fullmatch(str(entry.get("anchor", ""))):
                raise ValueError(f"contents entry has an invalid anchor: {entry.get('anchor')!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content: the entries (anchor, label, details)."""
        return {**super().to_dict(), "entries": [
            {"anchor": str(e["anchor"]), "label": str(e.get("label", "")),
             "details": str(e.get("details", ""))} for e in self.entries]}


@dataclass
class Text(Section):
    """A paragraph of free text (escaped)."""

    text: str = ""

    def __post_init__(self) -> None:
        self.kind = "text"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content of the section (kind, title, caption, text)."""
        return {**super().to_dict(), "text": self.text}


@dataclass
class Facts(Section):
    """Key-value facts (model identity, settings)."""

    facts: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = "facts"

    def rows(self) -> list[tuple[str, str]]:
        """``(key, formatted value)`` pairs as shown on the page (containers as JSON)."""
        out = []
        for key, value in self.facts.items():
            if isinstance(value, (Mapping, list, tuple)):
                text = json.dumps(jsonable(value))
            elif isinstance(value, (float, np.floating)):
                text = rounded(value, 3)
            else:
                text = _format_cell(value, 4)
            out.append((str(key), text))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content of the section, ``facts`` with their unformatted values."""
        return {**super().to_dict(), "facts": jsonable(dict(self.facts))}


@dataclass
class Table(Section):
    """A DataFrame shown as an HTML table (first ``max_rows`` rows; all rows go to JSON)."""

    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    max_rows: int = 50
    digits: int = 3
    index: bool = False

    def __post_init__(self) -> None:
        self.kind = "table"

    def _frame(self) -> pd.DataFrame:
        return self.frame.reset_index() if self.index else self.frame

    def header(self) -> list[str]:
        """Column names shown (the index first when ``index`` is true)."""
        return [str(c) for c in self._frame().columns]

    def body(self) -> list[list[str]]:
        """The first ``max_rows`` rows, each cell formatted with ``digits`` digits."""
        frame = self._frame().head(self.max_rows)
        return [[_format_cell(v, self.digits) for v in row] for row in frame.itertuples(index=False)]

    @property
    def truncated(self) -> int:
        """Number of rows left out of the page (they are all in the JSON)."""
        return max(0, len(self.frame) - self.max_rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content: ``columns`` and every row (not only the ``max_rows`` shown)."""
        frame = self._frame()
        return {**super().to_dict(), "columns": self.header(),
                "rows": jsonable(frame.to_dict(orient="records"))}


@dataclass
class Figures(Section):
    """One or more rendered figures (matplotlib figures are converted on creation)."""

    images: list[str] = field(default_factory=list)
    alts: list[str] = field(default_factory=list)
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = "figure"

    @classmethod
    def from_matplotlib(cls, title: str, figures: Any | Sequence[Any], *, caption: str = "",
                        alts: Sequence[str] | None = None, data: Mapping[str, Any] | None = None,
                        dpi: int = 110) -> Figures:
        """Build from one matplotlib figure or a list of them; ``data`` holds the plotted numbers."""
        figs = list(figures) if isinstance(figures, (list, tuple)) else [figures]
        uris = [figure_to_data_uri(f, dpi=dpi) for f in figs]
        return cls(title=title, caption=caption, images=uris,
                   alts=list(alts) if alts else [title] * len(uris), data=dict(data or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content: the number of images and the plotted numbers (``data``)."""
        return {**super().to_dict(), "n_images": len(self.images), "data": jsonable(dict(self.data))}


@dataclass
class Gallery(Section):
    """Thumbnails with a caption each (images are shrunk to keep the file small)."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kind = "gallery"

    def add(self, image: Image.Image | np.ndarray, label: str, *, details: Mapping[str, Any] | None = None,
            max_side: int = 160, format: str = "JPEG") -> None:
        """Append one thumbnail with its label and the numbers shown under it."""
        self.items.append({
            "src": image_to_data_uri(image, max_side=max_side, format=format),
            "label": str(label),
            "details": dict(details or {}),
        })

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content: each item's label and details (the images stay in the page)."""
        return {**super().to_dict(), "items": [
            {"label": it["label"], "details": jsonable(it["details"])} for it in self.items
        ]}


@dataclass
class Report:
    """A rendered-on-demand HTML report with its JSON twin.

    Args:
        title: Page title.
        kind: ``"explanation"`` or ``"audit"`` (free text, recorded in the JSON).
        sections: Building blocks, rendered in order.
        notice: A warning shown at the top (for example the model card's not-for-clinical-use line).
        meta: Extra JSON-ready facts kept in the JSON only.

    Examples:
        >>> import pandas as pd
        >>> r = Report("Demo", sections=[Table("Scores", frame=pd.DataFrame({"a": [1.5]}))])
        >>> "<table" in r.to_html()
        True
    """

    title: str
    kind: str = "report"
    sections: list[Section] = field(default_factory=list)
    notice: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, section: Section) -> Report:
        """Append a section and return the report (chainable)."""
        self.sections.append(section)
        return self

    @property
    def summary(self) -> Summary | None:
        """The findings-first summary section, if the report has one."""
        return next((s for s in self.sections if isinstance(s, Summary)), None)

    def ordered(self) -> list[Section]:
        """Sections in reading order: the summary, the evidence, then collapsed settings."""
        first = [s for s in self.sections if s.kind == "summary"]
        middle = [s for s in self.sections if s.kind != "summary" and not s.collapsed]
        last = [s for s in self.sections if s.kind != "summary" and s.collapsed]
        return first + middle + last

    def to_dict(self) -> dict[str, Any]:
        """Every number and text the page shows, JSON-ready."""
        from conceptlens import __version__

        return {
            "title": self.title,
            "kind": self.kind,
            "notice": self.notice,
            "conceptlens_version": __version__,
            "meta": jsonable(self.meta),
            "sections": [{**s.to_dict(), "collapsed": s.collapsed} for s in self.ordered()],
        }

    def to_html(self) -> str:
        """The whole page as one self-contained HTML string."""
        from conceptlens import __version__

        template = _environment().get_template("report.html.j2")
        return template.render(report=self, version=__version__)

    def save(self, out_dir: str | Path, name: str = "report") -> tuple[Path, Path]:
        """Write ``NAME.html`` and ``NAME.json`` inside ``out_dir`` (created if needed).

        ``name`` must be a plain file stem: reports are only ever written inside ``out_dir``.
        """
        if not name or Path(name).name != name or name in {".", ".."}:
            raise ValueError(f"report name must be a plain file name without folders, got {name!r}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        html_path, json_path = out / f"{name}.html", out / f"{name}.json"
        html_path.write_text(self.to_html(), encoding="utf-8")
        json_path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
        return html_path, json_path

    def _repr_html_(self) -> str:
        page = html.escape(self.to_html(), quote=True)
        return (f'<iframe srcdoc="{page}" style="width:100%;height:640px;border:1px solid #ccc" '
                f'sandbox title="{html.escape(self.title)}"></iframe>')

    def __repr__(self) -> str:
        kinds = ", ".join(s.kind for s in self.sections)
        return f"Report(title={self.title!r}, kind={self.kind!r}, sections=[{kinds}])"


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("conceptlens._html", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

