import numpy as np
import pytest
import torch

from conceptlens.explain.targets import (
    ClassTarget,
    ConceptTarget,
    PromptTarget,
    TargetError,
    UnknownClassError,
    UnknownConceptError,
    resolve_target,
)


class _Vocab:
    ids = ["C1", "C2", "C3"]
    names = {"C1": "pigment network", "C2": "dots", "C3": "streaks"}


class _Scorer:
    """score_tensor = per-image channel means, one column per concept."""

    vocabulary = _Vocab()

    def score_tensor(self, pixels):
        return pixels.mean(dim=(2, 3))


class _Binary:
    classes_ = np.array(["benign", "malignant"])
    coef_ = np.array([[0.0, 2.0, -1.0]])
    intercept_ = np.array([0.5])
    feature_names_in_ = np.array(["C3", "C2", "C1"])


def test_shorthand_rules():
    scorer, bn = _Scorer(), _Binary()
    assert resolve_target("malignant", scorer=scorer, bottleneck=bn) == ClassTarget("malignant")
    assert resolve_target("C2", scorer=scorer, bottleneck=bn) == ConceptTarget("C2")
    assert resolve_target("Pigment Network", scorer=scorer) == ConceptTarget("Pigment Network")
    assert resolve_target("a mole") == PromptTarget("a mole")
    assert resolve_target("concept:C1", scorer=scorer) == ConceptTarget("C1")
    assert resolve_target("class:benign") == ClassTarget("benign")
    assert resolve_target("prompt:C1", scorer=scorer) == PromptTarget("C1")
    with pytest.raises(UnknownConceptError, match="'a mole'"):
        resolve_target("a mole", scorer=scorer)
    with pytest.raises(UnknownClassError, match="'a mole'"):
        resolve_target("a mole", bottleneck=bn)
    with pytest.raises(TypeError, match="bottleneck"):
        resolve_target(3)


def test_class_shorthand_matches_integer_labels():
    class _IntBinary(_Binary):
        classes_ = np.array([0, 1])

    _, weights, bias = ClassTarget("1").linear_map(_Scorer(), _IntBinary())
    np.testing.assert_array_equal(weights, [0.0, 2.0, -1.0])
    assert bias == 0.5
    _, weights, bias = resolve_target("class:0").linear_map(_Scorer(), _IntBinary())
    np.testing.assert_array_equal(weights, [-0.0, -2.0, 1.0])
    assert bias == -0.5
    with pytest.raises(UnknownClassError, match="'2'"):
        ClassTarget("2").linear_map(_Scorer(), _IntBinary())


def test_concept_target_picks_its_column_by_id_or_name():
    x = torch.arange(3.0).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    assert ConceptTarget("C2").build(None, _Scorer())(x).tolist() == [1.0, 1.0]
    assert ConceptTarget("streaks").build(None, _Scorer())(x).tolist() == [2.0, 2.0]
    with pytest.raises(TargetError, match="scorer"):
        ConceptTarget("C2").build(None, None)


def test_binary_class_target_maps_features_by_name_and_negates_the_negative_class():
    x = torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1)
    # features ordered C3, C2, C1 -> weights 0 * 100 + 2 * 10 - 1 * 1 + 0.5
    positive = ClassTarget("malignant").build(None, _Scorer(), _Binary())(x)
    negative = ClassTarget("benign").build(None, _Scorer(), _Binary())(x)
    assert positive.item() == pytest.approx(19.5)
    assert negative.item() == pytest.approx(-19.5)
    with pytest.raises(UnknownClassError, match="'cat'"):
        ClassTarget("cat").build(None, _Scorer(), _Binary())


def test_class_target_rejects_concepts_missing_from_the_scorer():
    class Other(_Binary):
        feature_names_in_ = np.array(["C3", "C2", "C9"])

    with pytest.raises(TargetError, match="C9"):
        ClassTarget("benign").build(None, _Scorer(), Other())


def test_class_target_raises_when_the_bottleneck_saw_another_vocabulary():
    import warnings
    from types import SimpleNamespace

    import numpy as np
    import pytest

    from conceptlens.errors import ScoreSpaceMismatchError
    from conceptlens.explain import ClassTarget

    scorer = SimpleNamespace(vocabulary=SimpleNamespace(ids=["a", "b"], hash="current", names={}))
    bottleneck = SimpleNamespace(coef_=np.array([[1.0, -1.0]]), intercept_=np.array([0.5]),
                                 classes_=np.array([0, 1]), feature_names_in_=np.array(["a", "b"]),
                                 vocabulary_hash_="fitted")
    with pytest.raises(ScoreSpaceMismatchError, match="vocabulary fitted"):
        ClassTarget(1).linear_map(scorer, bottleneck)
    bottleneck.vocabulary_hash_ = "current"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        indices, weights, bias = ClassTarget(0).linear_map(scorer, bottleneck)
    assert indices.tolist() == [0, 1] and weights.tolist() == [-1.0, 1.0] and bias == -0.5


@pytest.mark.parametrize("n_classes", [2, 3])
def test_class_weights_hold_the_sign_convention_once(n_classes):
    from sklearn.exceptions import NotFittedError

    from conceptlens.concepts import SparseLinearBottleneck

    rng = np.random.default_rng(0)
    X = rng.random((60, 4))
    y = np.array(["a", "b", "c"][:n_classes])[np.argmax(X[:, :n_classes], axis=1)]
    model = SparseLinearBottleneck(cv=3).fit(X, y)
    decision = np.atleast_2d(model.decision_function(X).T).T
    for k, label in enumerate(model.classes_):
        weights, intercept = model.class_weights(label)
        assert weights.shape == (4,) and isinstance(intercept, float)
        expected = (decision[:, 0] * (1 if k == 1 else -1)) if n_classes == 2 else decision[:, k]
        np.testing.assert_allclose(model.transform_scores(X) @ weights + intercept, expected, atol=1e-10)
        # the explain chain and the bottleneck read the same weights
        _, target_weights, bias = ClassTarget(label).linear_map(_Scorer4(), model)
        np.testing.assert_array_equal(target_weights, weights)
        assert bias == intercept
    with pytest.raises(UnknownClassError, match="'z'"):
        model.class_weights("z")
    with pytest.raises(NotFittedError):
        SparseLinearBottleneck().class_weights("a")


class _Scorer4:
    class vocabulary:  # noqa: N801 - a stand-in attribute
        ids = ["concept_0", "concept_1", "concept_2", "concept_3"]
        names: dict = {}
        hash = None


def test_bound_target_builds_its_function_and_margin_once():
    from conceptlens.explain import BoundTarget

    built = []

    class Counting(ConceptTarget):
        def build(self, backbone, scorer=None, bottleneck=None):
            built.append("function")
            return super().build(backbone, scorer, bottleneck)

    scorer = _Scorer()
    bound = Counting("C2").bind(None, scorer)
    assert isinstance(bound, BoundTarget) and bound.describe() == "concept C2"
    pixels = torch.arange(24.0).reshape(2, 3, 2, 2)
    assert bound.function is bound.function
    np.testing.assert_allclose(bound.function(pixels).numpy(), pixels.mean(dim=(2, 3))[:, 1].numpy())
    assert bound.margin is None and bound.margin is None  # cosine scores: no decision boundary
    assert built == ["function"]
    with pytest.raises(TargetError, match="scorer"):
        ConceptTarget("C2").bind(None)
