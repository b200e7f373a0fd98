import pytest

from conceptlens.vocab.concept import Concept, VocabularyError, is_cui


def test_cui_property_and_terms_dedupe_case_insensitively():
    c = Concept("C0332563", "papule", synonyms=("Papule", "papules"), source="HPO HP:0200034 xref")
    assert c.cui == "C0332563"
    assert c.terms == ("papule", "papules")
    assert Concept("x:papule", "papule").cui is None


@pytest.mark.parametrize("bad", ["C123456", "C12345678", "c0332563", "UMLS:C0332563", "C0332563x"])
def test_malformed_cui_ids_are_rejected_with_the_id_named(bad):
    with pytest.raises(VocabularyError, match="CUI") as info:
        Concept(bad, "name", source="somewhere")
    assert repr(bad) in str(info.value)


def test_cui_requires_a_source_and_names_must_not_be_empty():
    with pytest.raises(VocabularyError, match="source"):
        Concept("C0332563", "papule")
    with pytest.raises(VocabularyError, match="empty name") as info:
        Concept("x:a", "  ")
    assert "'x:a'" in str(info.value)


def test_lists_become_tuples_and_attributes_are_frozen_but_equal_and_hashable():
    a = Concept("x:a", "a", synonyms=["b"], attributes={"points": 2, "values": ["p", "q"]})
    b = Concept("x:a", "a", synonyms=("b",), attributes={"points": 2, "values": ("p", "q")})
    assert a == b and hash(a) == hash(b)
    assert a.synonyms == ("b",)
    with pytest.raises(TypeError):
        a.attributes["points"] = 3
    assert a.to_dict()["attributes"] == {"points": 2, "values": ["p", "q"]}
    assert Concept("x:a", "a", attributes={"points": 3}) != a


def test_from_dict_rejects_unknown_fields_naming_them():
    with pytest.raises(VocabularyError, match="'synonym'") as info:
        Concept.from_dict({"id": "x:a", "name": "a", "synonym": ["b"]})
    assert "'x:a'" in str(info.value)


def test_non_json_attributes_and_self_parent_rejected():
    with pytest.raises(VocabularyError, match="JSON-like"):
        Concept("x:a", "a", attributes={"f": object()})
    with pytest.raises(VocabularyError, match="own parent"):
        Concept("x:a", "a", parent="x:a")


def test_is_cui():
    assert is_cui("C0000001") and not is_cui("C000001") and not is_cui(None)


def test_concept_renders_escaped_html():
    concept = Concept(id="local:x", name="<b>veil</b>", synonyms=("blue veil",), source="demo")
    out = concept._repr_html_()
    assert "&lt;b&gt;veil&lt;/b&gt;" in out and "<b>" not in out
    assert "blue veil" in out and "parent" not in out
