import pytest

from conceptlens.vocab.concept import Concept, VocabularyError
from conceptlens.vocab.prompts import (
    DERM7PT_TEMPLATE,
    TEMPLATES,
    PromptTemplate,
    build_prompts,
    resolve_templates,
)
from conceptlens.vocab.vocabulary import ConceptVocabulary


@pytest.fixture
def vocab():
    return ConceptVocabulary(
        [
            Concept("d:veil", "blue-whitish veil", synonyms=("blue-white veil", "Blue-Whitish Veil")),
            Concept("d:streaks", "streaks",
                    prompts=("Dermoscopy shows irregular STREAKS at the rim.",)),
        ],
        name="d",
        modality="dermoscopy",
    )


def test_spans_point_at_the_term(vocab):
    prompts = build_prompts(vocab)
    assert list(prompts) == ["d:veil", "d:streaks"]
    veil = prompts["d:veil"]
    # templates x unique terms (the case-only duplicate synonym is dropped)
    assert len(veil) == len(TEMPLATES["dermoscopy"]) * 2
    for p in veil:
        start, end = p.span
        assert p.text[start:end] == p.term
        assert p.term in ("blue-whitish veil", "blue-white veil")
        assert p.text == p.template.replace("{concept}", p.term)
        assert "veil" not in p.reference
    assert veil[0].text == "This is dermatoscopy of blue-whitish veil."
    assert veil[0].reference == "This is dermatoscopy."


def test_override_replaces_templates_and_locates_term_case_insensitively(vocab):
    (p,) = build_prompts(vocab)["d:streaks"]
    assert p.text == "Dermoscopy shows irregular STREAKS at the rim."
    assert p.text[p.span[0]:p.span[1]] == "STREAKS"
    assert p.template == "Dermoscopy shows irregular {concept} at the rim."
    assert "STREAKS" not in p.reference


def test_override_without_term_is_a_clear_error():
    vocab = ConceptVocabulary([Concept("d:x", "veil", prompts=("Nothing relevant here.",))])
    with pytest.raises(VocabularyError, match="mentions none") as info:
        build_prompts(vocab)
    assert "'d:x'" in str(info.value)


def test_custom_templates_and_no_synonyms(vocab):
    prompts = build_prompts(vocab.subset(["d:veil"]), [DERM7PT_TEMPLATE], synonyms=False)
    assert [p.text for p in prompts["d:veil"]] == ["This is dermatoscopy of blue-whitish veil."]
    prompts = build_prompts(vocab.subset(["d:veil"]), "a {concept} photo", synonyms=False)
    (p,) = prompts["d:veil"]
    assert p.text == "a blue-whitish veil photo" and p.reference == "a photo"


def test_modality_selection_and_fallback():
    vocab = ConceptVocabulary([Concept("c:x", "cardiomegaly")], modality="chest_xray")
    assert build_prompts(vocab)["c:x"][0].template == TEMPLATES["chest x-ray"][0].text
    assert build_prompts(vocab, modality="fundus")["c:x"][0].template == TEMPLATES["fundus"][0].text
    with pytest.warns(UserWarning, match="no prompt templates"):
        assert resolve_templates(modality="ultrasound") == TEMPLATES["default"]


def test_template_validation():
    with pytest.raises(ValueError, match="exactly once"):
        PromptTemplate("no slot")
    with pytest.raises(ValueError, match="without the concept"):
        PromptTemplate("{concept}", "{concept}")
    assert PromptTemplate("A chest X-ray showing {concept}.").reference == "A chest X-ray."
    assert PromptTemplate("A {x} literal {concept}").fill("c") == ("A {x} literal c", (14, 15))


def test_every_builtin_template_has_a_reference():
    for templates in TEMPLATES.values():
        for t in templates:
            assert t.reference and "{concept}" not in t.reference


def test_override_that_is_only_the_term_has_no_reference():
    vocab = ConceptVocabulary([Concept("d:x", "veil", prompts=("Veil", "a veil photo"))])
    bare, photo = build_prompts(vocab)["d:x"]
    assert bare.reference == "" and photo.reference == "a photo"
