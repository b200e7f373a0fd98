"""Concept-bottleneck classifiers, interventions and audits."""

__all__: list[str] = []
