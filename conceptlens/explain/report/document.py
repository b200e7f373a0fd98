"""A self-contained HTML report plus the JSON file holding every number it shows.

The implementation lives in :mod:`conceptlens._html.document` (below every layer, so
result objects anywhere can return report sections); this module is its public home.
"""

from conceptlens._html.document import (
    Contents,
    Facts,
    Figures,
    Gallery,
    Report,
    Section,
    Summary,
    Table,
    Text,
    figure_to_data_uri,
    image_to_data_uri,
    interval,
    rounded,
)

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
