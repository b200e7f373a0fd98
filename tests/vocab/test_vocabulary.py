import pandas as pd
import pytest

from conceptlens.vocab.concept import Concept, VocabularyError
from conceptlens.vocab.vocabulary import ConceptVocabulary


@pytest.fixture
def vocab():
    return ConceptVocabulary(
        [
            Concept("d:net", "pigment network", group="major", synonyms=("network",)),
            Concept("d:veil", "blue-whitish veil", group="major", attributes={"points": 2}),
            Concept("d:streaks", "streaks", group="minor", modalities=("clinical dermatology",)),
        ],
        name="d",
        modality="dermoscopy",
    )


def test_container_protocol(vocab):
    assert vocab.ids == ["d:net", "d:veil", "d:streaks"]
    assert len(vocab) == 3 and [c.id for c in vocab] == vocab.ids
    assert vocab["d:veil"].name == "blue-whitish veil" and vocab[-1].id == "d:streaks"
    assert "d:veil" in vocab and "d:nope" not in vocab
    assert vocab.index("d:streaks") == 2
    assert vocab.names == {"d:net": "pigment network", "d:veil": "blue-whitish veil", "d:streaks": "streaks"}
    assert vocab[1:].ids == ["d:veil", "d:streaks"]


def test_unknown_id_suggests_close_match(vocab):
    with pytest.raises(KeyError, match="d:veil"):
        vocab["d:vail"]


def test_duplicate_ids_rejected():
    with pytest.raises(VocabularyError, match="duplicate id") as info:
        ConceptVocabulary([Concept("a:x", "x"), Concept("a:x", "y")])
    assert "'a:x'" in str(info.value)


def test_positional_name_gives_clear_type_error():
    with pytest.raises(TypeError, match="keywords"):
        ConceptVocabulary("demo")


def test_hash_is_stable_and_tracks_content_and_order(vocab):
    same = ConceptVocabulary(list(vocab), name="other name", modality="x")
    assert vocab.hash == same.hash and len(vocab.hash) == 16
    changed = ConceptVocabulary(
        [*vocab.concepts[:2], Concept("d:streaks", "streaks", group="minor")], name="d"
    )
    assert changed.hash != vocab.hash
    assert vocab.subset(["d:veil", "d:net", "d:streaks"]).hash != vocab.hash
    attr = ConceptVocabulary([Concept("d:veil", "blue-whitish veil", group="major", attributes={"points": 1})])
    assert attr.hash != vocab.subset(["d:veil"]).hash


def test_subset_keeps_given_order_and_rejects_unknown(vocab):
    assert vocab.subset(["d:streaks", "d:net"]).ids == ["d:streaks", "d:net"]
    with pytest.raises(KeyError):
        vocab.subset(["d:nope"])


def test_filter_by_group_modality_predicate(vocab):
    assert vocab.filter(group="major").ids == ["d:net", "d:veil"]
    assert vocab.filter(group=["minor"]).ids == ["d:streaks"]
    # concepts without modalities inherit the vocabulary default
    assert vocab.filter(modality="Dermoscopy").ids == ["d:net", "d:veil"]
    assert vocab.filter(modality="clinical_dermatology").ids == ["d:streaks"]
    assert vocab.filter(predicate=lambda c: "points" in c.attributes).ids == ["d:veil"]


def test_merge(vocab):
    other = ConceptVocabulary(
        [vocab["d:veil"], Concept("x:papule", "papule")], name="x", modality="clinical dermatology"
    )
    merged = vocab.merge(other)
    assert merged.ids == ["d:net", "d:veil", "d:streaks", "x:papule"]
    assert merged.name == "d+x"
    # modalities differ: each concept keeps the modality it had
    assert merged["d:net"].modalities == ("dermoscopy",)
    assert merged["x:papule"].modalities == ("clinical dermatology",)
    clash = ConceptVocabulary([Concept("d:veil", "veil")], name="y", modality="dermoscopy")
    with pytest.raises(VocabularyError, match="defined differently"):
        vocab.merge(clash)
    kept = vocab.merge(clash, on_conflict="keep_first")
    assert kept["d:veil"].name == "blue-whitish veil" and kept.ids == vocab.ids


def test_to_frame_and_html_escape():
    v = ConceptVocabulary([Concept("x:a", "<script>alert(1)</script>", synonyms=("s&t",))], name="<b>")
    frame = v.to_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == ["x:a"]
    assert frame.loc["x:a", "synonyms"] == ("s&t",)
    page = v._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page and "s&amp;t" in page


def test_from_names():
    v = ConceptVocabulary.from_names(["Blue-whitish veil", "streaks"], name="mine")
    assert v.ids == ["mine:blue_whitish_veil", "mine:streaks"]


def test_resolve_by_id_name_or_synonym_case_insensitive():
    import pytest

    from conceptlens.errors import UnknownConceptError
    from conceptlens.vocab.concept import Concept
    from conceptlens.vocab.vocabulary import ConceptVocabulary

    vocab = ConceptVocabulary([
        Concept("derm:pn", "Pigment network", synonyms=("reticular pattern",)),
        Concept("derm:veil", "blue-whitish veil", synonyms=("blue-white  veil",)),
        Concept("derm:dots", "dots", synonyms=("globules",)),
        Concept("derm:globules", "globules"),
    ], name="t")
    for key in ("derm:pn", "DERM:PN", "pigment network", "Pigment  Network", "Reticular pattern",
                vocab["derm:pn"]):
        assert vocab.resolve(key).id == "derm:pn"
    assert vocab.resolve("Blue-White Veil").id == "derm:veil"
    # a preferred name wins over another concept's synonym
    assert vocab.resolve("globules").id == "derm:globules"
    with pytest.raises(UnknownConceptError, match=r"'pigmnt network'.*did you mean 'Pigment network'"):
        vocab.resolve("pigmnt network")
    with pytest.raises(KeyError):  # still a KeyError for code that catches one
        vocab.resolve("nothing like it")


def test_resolve_refuses_a_name_two_concepts_share():
    import pytest

    from conceptlens.errors import UnknownConceptError
    from conceptlens.vocab.concept import Concept
    from conceptlens.vocab.vocabulary import ConceptVocabulary

    vocab = ConceptVocabulary([Concept("a:x", "streaks"), Concept("b:x", "Streaks")], name="t")
    with pytest.raises(UnknownConceptError, match=r"ambiguous.*\['a:x', 'b:x'\]"):
        vocab.resolve("streaks")
