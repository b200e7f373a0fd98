import numpy as np
import pytest
from PIL import Image

from conceptlens.models.images import grid_coverage, resize_map_to_original
from conceptlens.vocab.maps import ConceptMaps
from conceptlens.vocab.scorer import ConceptScorer, covered_fraction
from tests.helpers.fakes import FakeBackbone, make_image


def _maps(grid=(3, 3), size=(60, 30)):
    maps = np.zeros((2, *grid), dtype=np.float32)
    maps[0, 0, 0] = 1.0  # concept 0 lights up the top-left patch
    maps[1, -1, -1] = 1.0  # concept 1 the bottom-right patch
    return ConceptMaps(
        image=Image.new("RGB", size), image_id="case <1>", concept_ids=["c:a", "c:b"],
        concept_names={"c:a": "alpha <b>", "c:b": "beta"}, maps=maps, scores=np.array([0.2, 0.7]),
        covered_fraction=(0.9, 0.9),
    )


def test_upsampled_map_lies_on_the_original_image_where_the_patch_was():
    maps = _maps()
    up_a, up_b = maps.upsampled("c:a"), maps.upsampled("beta")
    assert up_a.shape == (30, 60) and up_b.shape == (30, 60)
    row, col = np.unravel_index(up_a.argmax(), up_a.shape)
    assert row < 30 * 0.9 / 3 and col < 60 * 0.9 / 3
    row, col = np.unravel_index(up_b.argmax(), up_b.shape)
    assert row >= 30 * 0.9 * 2 / 3 and col >= 60 * 0.9 * 2 / 3
    np.testing.assert_array_equal(
        up_b, resize_map_to_original(maps.maps[1], (60, 30), covered_fraction=(0.9, 0.9)))


def test_lookup_by_id_or_name_and_unknown_concept():
    maps = _maps()
    assert maps.index("c:b") == 1 and maps.index("alpha <b>") == 0
    assert maps.grid == (3, 3) and maps.top(1) == ["c:b"]
    with pytest.raises(KeyError, match="'c:zzz'"):
        maps.map("c:zzz")


def test_concept_names_are_a_dict_like_score_tables():
    from conceptlens.errors import DeprecatedNameWarning

    maps = _maps()
    assert maps.concept_names == {"c:a": "alpha <b>", "c:b": "beta"}
    with pytest.warns(DeprecatedNameWarning, match="concept_names"):
        assert maps.names == ["alpha <b>", "beta"]
    listed = ConceptMaps(image=Image.new("RGB", (4, 4)), image_id="x", concept_ids=["a", "b"],
                         concept_names=["A", "B"], maps=np.zeros((2, 2, 2)), scores=np.zeros(2))
    assert listed.concept_names == {"a": "A", "b": "B"}


def test_html_escapes_user_strings_and_embeds_overlays():
    out = _maps()._repr_html_()
    assert "case &lt;1&gt;" in out and "alpha &lt;b&gt;" in out and "<b>alpha" not in out
    assert out.count("data:image/png;base64,") == 2


def test_shape_validation():
    with pytest.raises(ValueError, match="K = 2"):
        ConceptMaps(image=Image.new("RGB", (4, 4)), image_id="x", concept_ids=["a", "b"],
                    concept_names=["a", "b"], maps=np.zeros((3, 2, 2)), scores=np.zeros(2))


def test_covered_fraction_matches_conceptclip_geometry():
    backbone = FakeBackbone(image_size=384, patch=14)
    assert covered_fraction(backbone, (27, 27)) == pytest.approx(grid_coverage(384, 14))
    del backbone.patch_size  # falls back to image_size // grid
    assert covered_fraction(backbone, (27, 27)) == pytest.approx((378 / 384, 378 / 384))


def test_scorer_maps_follow_a_planted_region(vocabulary):
    """A concept map of the fake model must be higher where the image content changes."""
    backbone = FakeBackbone()
    scorer = ConceptScorer(backbone, vocabulary, mode="local", calibration="cosine", progress=False)
    plain = np.full((36, 36, 3), 128, np.uint8)
    planted = plain.copy()
    planted[:8, :8] = np.asarray(make_image(5, size=(8, 8)))
    base = scorer.concept_maps(Image.fromarray(plain), "streaks").maps[0]
    with_patch = scorer.concept_maps(Image.fromarray(planted), "streaks").maps[0]
    changed = np.argwhere(~np.isclose(base, with_patch))
    assert changed.size and (changed <= 1).all()  # only the top-left 2x2 patches changed


def test_concept_maps_and_attribute_resolve_concepts_the_same_way(backbone, vocabulary):
    from conceptlens.errors import UnknownConceptError
    from conceptlens.explain import attribute

    scorer = ConceptScorer(backbone, vocabulary, progress=False, reference=None)
    image = make_image(3)
    by_id = scorer.concept_maps(image, ["t:network", "t:veil"])
    by_name = scorer.concept_maps(image, ["Pigment Network", "Blue-White Veil"])
    assert by_name.concept_ids == ["t:network", "t:veil"]
    np.testing.assert_array_equal(by_name.maps, by_id.maps)
    assert by_name.index("PIGMENT NETWORK") == 0
    mapped = attribute(scorer, image, "Pigment Network", method="concept_map")
    np.testing.assert_array_equal(mapped.raw, by_id.maps[0])
    for lookup in (lambda key: scorer.concept_maps(image, key),
                   lambda key: attribute(scorer, image, key, method="concept_map")):
        with pytest.raises(UnknownConceptError, match="did you mean 'pigment network'"):
            lookup("pigment netwrk")
