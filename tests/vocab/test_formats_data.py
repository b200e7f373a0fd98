"""The file formats work on plain data; ConceptVocabulary is built from what they read."""

import pytest

from conceptlens.vocab import ConceptVocabulary
from conceptlens.vocab.concept import Concept
from conceptlens.vocab.formats import VocabularyData, read_vocabulary, write_vocabulary
from conceptlens.vocab.prompts import modality_key


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".csv", ".obo"])
def test_readers_return_plain_data_and_writers_take_it(tmp_path, suffix):
    data = VocabularyData(
        (Concept("d:veil", "blue-whitish veil", synonyms=("veil",)), Concept("d:dots", "dots")),
        name="mini", description="two concepts", modality="dermoscopy",
    )
    path = write_vocabulary(data, tmp_path / f"mini{suffix}")
    read = read_vocabulary(path)
    assert isinstance(read, VocabularyData) and not isinstance(read, ConceptVocabulary)
    assert [c.id for c in read] == ["d:veil", "d:dots"] and len(read) == 2
    assert (read.name, read.description, read.modality) == ("mini", "two concepts", "dermoscopy")
    vocabulary = ConceptVocabulary.from_file(path)
    assert isinstance(vocabulary, ConceptVocabulary)
    assert vocabulary == ConceptVocabulary(read.concepts, name="mini",
                                           description="two concepts", modality="dermoscopy")
    assert read_vocabulary(vocabulary.to_file(tmp_path / f"again{suffix}")) == read


def test_modality_key_forgives_case_and_aliases():
    assert modality_key("Dermoscopy") == "dermoscopy"
    assert modality_key("no such modality") is None
