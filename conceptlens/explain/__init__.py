"""Attributions, concept maps, faithfulness metrics, plots and reports."""

__all__: list[str] = []
