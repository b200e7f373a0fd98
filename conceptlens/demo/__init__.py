"""Synthetic dermoscopy data with ground truth and the demo model trained on it."""

__all__: list[str] = []
