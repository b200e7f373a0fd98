"""Renamed names keep working for one release and say so."""

import pytest

from conceptlens._deprecation import deprecated_alias, deprecated_property, renamed_parameters
from conceptlens.errors import ConceptlensWarning, DeprecatedNameWarning


def test_warning_is_a_conceptlens_and_future_warning():
    assert issubclass(DeprecatedNameWarning, ConceptlensWarning)
    assert issubclass(DeprecatedNameWarning, FutureWarning)


def test_alias_warns_and_forwards():
    def normalize(x, *, by=2):
        return x / by

    normalise = deprecated_alias(normalize, "normalise")
    with pytest.warns(DeprecatedNameWarning, match=r"normalise\(\) .* use normalize\(\)"):
        assert normalise(4, by=4) == 1
    assert normalise.__name__ == "normalise"


def test_renamed_parameter_maps_old_to_new_and_refuses_both():
    @renamed_parameters(layers_to_randomise="layers_to_randomize")
    def check(*, layers_to_randomize=None):
        return layers_to_randomize

    with pytest.warns(DeprecatedNameWarning, match="layers_to_randomise"):
        assert check(layers_to_randomise=["a"]) == ["a"]
    assert check(layers_to_randomize=["b"]) == ["b"]
    with pytest.raises(TypeError, match="both"):
        check(layers_to_randomise=1, layers_to_randomize=2)


def test_deprecated_property_reads_the_new_attribute():
    class Curve:
        normalized = 3
        normalised = deprecated_property("normalized", "normalised")

    with pytest.warns(DeprecatedNameWarning, match=r"Curve\.normalised"):
        assert Curve().normalised == 3


def test_british_names_of_the_first_release_still_work():
    import numpy as np

    from conceptlens.explain import metrics
    from conceptlens.explain.metrics import sanity, similarity

    with pytest.warns(DeprecatedNameWarning, match="randomization_check"):
        assert metrics.randomisation_check is metrics.randomization_check
    with pytest.warns(DeprecatedNameWarning):
        assert metrics.RandomisationResult is sanity.RandomizationResult
    a = np.arange(16.0).reshape(4, 4)
    with pytest.warns(DeprecatedNameWarning, match="normalise"):
        assert similarity.ssim(a, a, normalise=False) == pytest.approx(1.0)
    with pytest.raises(AttributeError, match="no attribute"):
        metrics.no_such_metric  # noqa: B018
