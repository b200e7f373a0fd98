"""Bad input gives clear errors, for both bottlenecks."""

import numpy as np
import pytest
from sklearn.base import clone

from conceptlens.concepts import AssociationBottleneck, SparseLinearBottleneck

ESTIMATORS = [SparseLinearBottleneck(Cs=3, cv=None), AssociationBottleneck(n_epochs=5)]


@pytest.fixture(params=ESTIMATORS, ids=lambda m: type(m).__name__)
def estimator(request):
    return clone(request.param)


def test_mismatched_lengths(estimator, binary_rule):
    X, y = binary_rule
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[400, 399\]"):
        estimator.fit(X, y[:-1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores(estimator, binary_rule, bad):
    X, y = binary_rule
    X = X.copy()
    X.iloc[3, 1] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        estimator.fit(X, y)
    model = estimator.fit(binary_rule[0], y)
    with pytest.raises(ValueError, match="Input X contains"):
        model.predict(X)


def test_single_class(estimator, binary_rule):
    X, _ = binary_rule
    with pytest.raises(ValueError, match="needs at least two classes, but y contains only one class"):
        estimator.fit(X, np.full(len(X), "a"))


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_wrong_columns_at_predict(estimator, binary_rule):
    X, y = binary_rule
    model = estimator.fit(X, y)
    with pytest.raises(ValueError, match="feature names"):
        model.predict(X.rename(columns={"C0": "C_zero"}))
    with pytest.raises(ValueError, match="features"):
        model.predict(X.to_numpy()[:, :5])
