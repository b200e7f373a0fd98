"""Both bottlenecks pass scikit-learn's estimator checks (with small, fast settings)."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from conceptlens.concepts import (
    AssociationBottleneck,
    HybridBottleneck,
    MultiLabelBottleneck,
    SparseLinearBottleneck,
)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::conceptlens.concepts.EmptyModelWarning")
@pytest.mark.filterwarnings("ignore::conceptlens.errors.ConceptlensWarning")
@parametrize_with_checks(
    [
        SparseLinearBottleneck(Cs=5, cv=2, max_iter=200),
        SparseLinearBottleneck(Cs=5, cv=2, max_iter=200, solver="saga"),
        AssociationBottleneck(n_epochs=100),
        HybridBottleneck(SparseLinearBottleneck(Cs=5, cv=2, max_iter=200), residual_C=1.0),
        MultiLabelBottleneck(SparseLinearBottleneck(Cs=5, cv=2, max_iter=200)),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
