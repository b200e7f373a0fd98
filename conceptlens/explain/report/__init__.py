"""Self-contained HTML reports (with a JSON twin) for explanations and audits."""

from conceptlens.explain.report.document import (
    Facts,
    Figures,
    Gallery,
    Report,
    Section,
    Table,
    Text,
    figure_to_data_uri,
    image_to_data_uri,
)

__all__ = [
    "Facts",
    "Figures",
    "Gallery",
    "Report",
    "Section",
    "Table",
    "Text",
    "figure_to_data_uri",
    "image_to_data_uri",
]
