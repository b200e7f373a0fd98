import json
import pickle

import numpy as np
import pytest

from conceptlens.concepts import (
    AssociationBottleneck,
    SparseLinearBottleneck,
    VocabularyMismatchError,
    load_bottleneck,
)


def _models():
    return [
        SparseLinearBottleneck(Cs=5, cv=2, class_weight={"nevus": 2.0}),
        AssociationBottleneck(prior={"nevus": ["C0"], "bcc": {"C2": 1.0}}, n_epochs=20),
    ]


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_round_trip_is_exact_and_pickle_free(model, multiclass_rule, scores_factory, tmp_path, monkeypatch):
    X, y = multiclass_rule
    scores = scores_factory(X)
    model.fit(scores, y)
    folder = model.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["bottleneck.json", "bottleneck.npz"]

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must not be used to load a bottleneck")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    real_np_load = np.load

    def strict_np_load(*args, **kwargs):
        assert kwargs.get("allow_pickle") is False
        return real_np_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", strict_np_load)
    loaded = type(model).load(folder, vocabulary_hash="vocab-A")

    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    assert loaded.classes_.dtype == model.classes_.dtype
    for name in ("coef_", "intercept_", "mean_", "scale_", *model._array_attributes):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded.decision_function(scores), model.decision_function(scores))
    np.testing.assert_array_equal(loaded.predict_proba(scores), model.predict_proba(scores))
    assert loaded.concept_ids_ == model.concept_ids_
    assert loaded.concept_names_ == model.concept_names_
    assert loaded.vocabulary_hash_ == "vocab-A" and loaded.backbone_ == model.backbone_
    assert list(loaded.feature_names_in_) == list(model.feature_names_in_)
    meta = json.loads((folder / "bottleneck.json").read_text())
    assert meta["vocabulary_hash"] == "vocab-A" and meta["backbone"]["key"] == "abc123"


def test_other_vocabulary_is_rejected(multiclass_rule, scores_factory, tmp_path):
    X, y = multiclass_rule
    model = SparseLinearBottleneck(Cs=4, cv=None).fit(scores_factory(X), y)
    folder = model.save(tmp_path / "m")
    with pytest.raises(VocabularyMismatchError, match="vocab-B"):
        SparseLinearBottleneck.load(folder, vocabulary_hash="vocab-B")
    loaded = load_bottleneck(folder)
    with pytest.raises(VocabularyMismatchError, match="fitted on vocabulary 'vocab-A'"):
        loaded.predict(scores_factory(X, vocabulary_hash="vocab-B"))


def test_load_errors(multiclass_rule, tmp_path):
    X, y = multiclass_rule
    with pytest.raises(FileNotFoundError, match="bottleneck.json"):
        load_bottleneck(tmp_path / "missing")
    folder = SparseLinearBottleneck(Cs=3, cv=None).fit(X, y).save(tmp_path / "m")
    with pytest.raises(TypeError, match="holds a SparseLinearBottleneck"):
        AssociationBottleneck.load(folder)
    (folder / "bottleneck.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a conceptlens bottleneck"):
        load_bottleneck(folder)


def test_unserialisable_parameter_is_a_clear_error(multiclass_rule, tmp_path):
    X, y = multiclass_rule
    model = SparseLinearBottleneck(Cs=3, cv=None, random_state=np.random.RandomState(0)).fit(X, y)
    with pytest.raises(TypeError, match="RandomState"):
        model.save(tmp_path / "m")


def test_object_string_labels_round_trip(tmp_path):
    import numpy as np

    from conceptlens.concepts import SparseLinearBottleneck, load_bottleneck

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.where(X[:, 0] > 0, "melanoma", "benign").astype(object)
    model = SparseLinearBottleneck(Cs=4, cv=None).fit(X, y)
    loaded = load_bottleneck(model.save(tmp_path / "m"))
    assert loaded.classes_.dtype == object and list(loaded.classes_) == ["benign", "melanoma"]
    assert (loaded.predict(X) == model.predict(X)).all()


def test_every_bottleneck_class_is_registered_without_persistence_importing_it():
    import ast
    import inspect

    from conceptlens.concepts import HybridBottleneck, MultiLabelBottleneck, persistence

    registered = persistence.bottleneck_classes()
    for cls in (SparseLinearBottleneck, AssociationBottleneck, HybridBottleneck,
                MultiLabelBottleneck):
        assert registered[cls.__name__] is cls
    tree = ast.parse(inspect.getsource(persistence))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"conceptlens.concepts.sparse", "conceptlens.concepts.association",
                           "conceptlens.concepts.hybrid", "conceptlens.concepts.multilabel",
                           "conceptlens.concepts.base"}


def test_a_subclass_registers_itself_and_loads_back(multiclass_rule, tmp_path):
    from conceptlens.concepts import persistence

    class MySparseBottleneck(SparseLinearBottleneck):
        pass

    try:
        X, y = multiclass_rule
        model = MySparseBottleneck(Cs=3, cv=None, max_iter=200).fit(X, y)
        loaded = load_bottleneck(model.save(tmp_path / "mine"))
        assert type(loaded) is MySparseBottleneck
        np.testing.assert_array_equal(loaded.coef_, model.coef_)

        class SparseLinearBottleneck_(SparseLinearBottleneck):  # noqa: N801 - a name clash
            pass

        SparseLinearBottleneck_.__name__ = "SparseLinearBottleneck"
        persistence.register_bottleneck(SparseLinearBottleneck_)
        assert persistence.bottleneck_classes()["SparseLinearBottleneck"] is SparseLinearBottleneck
    finally:
        persistence._BOTTLENECKS.pop("MySparseBottleneck", None)
        persistence._BOTTLENECKS.pop("SparseLinearBottleneck_", None)
