"""Fixtures shared across the test packages."""

import pytest

from conceptlens.models import create_reference_model


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    """A tiny reference ConceptCLIP saved with ``save_pretrained`` (remote-code folder)."""
    model, processor = create_reference_model("tiny")
    folder = tmp_path_factory.mktemp("tiny_folder")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
