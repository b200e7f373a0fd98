"""Self-contained HTML reports (with a JSON twin) for explanations and audits."""

from conceptlens.explain.report.builders import ImageExplanation, audit_report, explanation_report
from conceptlens.explain.report.comparison import comparison_report, plot_comparison
from conceptlens.explain.report.dataset import dataset_report
from conceptlens.explain.report.document import (
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
)
from conceptlens.explain.report.extras import chain_sections, hybrid_parts, sections_of
from conceptlens.explain.report.workflows import explain_images, explain_items, model_notice

__all__ = [
    "ImageExplanation",
    "audit_report",
    "chain_sections",
    "comparison_report",
    "dataset_report",
    "explain_items",
    "explain_images",
    "explanation_report",
    "hybrid_parts",
    "model_notice",
    "plot_comparison",
    "sections_of",
    "Contents",
    "Facts",
    "Figures",
    "Gallery",
    "Report",
    "Section",
    "Summary",
    "Table",
    "Text",
    "figure_to_data_uri",
    "image_to_data_uri",
]
