"""Concept-bottleneck classifiers, interventions and audits.

* :class:`SparseLinearBottleneck`: sparse (L1 / elastic-net) logistic regression over concept
  scores, fitted along a warm-started regularisation path, "at most k concepts per class";
* :class:`AssociationBottleneck`: LaBo-style class x concept association matrix;
* :class:`MultiLabelBottleneck`: one sparse read-out per label (concepts per label or
  shared);
* :class:`HybridBottleneck`: PCBM-h, a bottleneck plus a residual on the image embedding,
  with each decision's residual share;
* explanations on both: ``contributions``, ``top_concepts``, ``global_importance``,
  ``intervene`` and :func:`intervention_curve`;
* :func:`audit`: explain and check any decision-maker's decisions through concepts;
* persistence without pickle: ``model.save(folder)`` / ``Class.load(folder)`` /
  :func:`load_bottleneck`.
"""

from conceptlens.concepts._inputs import UnknownConceptError, VocabularyMismatchError
from conceptlens.concepts.association import AssociationBottleneck
from conceptlens.concepts.audit import audit
from conceptlens.concepts.audit_result import AuditResult
from conceptlens.concepts.base import ConceptBottleneckBase
from conceptlens.concepts.hybrid import EmbeddingsError, HybridBottleneck, HybridDecomposition
from conceptlens.concepts.interventions import (
    INTERVENTION_POLICIES,
    intervention_curve,
    list_intervention_policies,
)
from conceptlens.concepts.multilabel import MultiLabelBottleneck
from conceptlens.concepts.persistence import load_bottleneck
from conceptlens.concepts.results import Contributions, InterventionResult, UnknownClassError
from conceptlens.concepts.sparse import EmptyModelWarning, SparseLinearBottleneck

__all__ = [
    "INTERVENTION_POLICIES",
    "AssociationBottleneck",
    "AuditResult",
    "ConceptBottleneckBase",
    "EmbeddingsError",
    "EmptyModelWarning",
    "HybridBottleneck",
    "HybridDecomposition",
    "Contributions",
    "InterventionResult",
    "MultiLabelBottleneck",
    "SparseLinearBottleneck",
    "UnknownClassError",
    "UnknownConceptError",
    "VocabularyMismatchError",
    "audit",
    "intervention_curve",
    "list_intervention_policies",
    "load_bottleneck",
]
