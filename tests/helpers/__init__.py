"""Test doubles and tiny models shared by the test suite.

* :mod:`tests.helpers.fakes`: :class:`~tests.helpers.fakes.FakeBackbone` (a deterministic
  backbone without transformers), its variants, a fake of ``ConceptMaps`` and
  :func:`~tests.helpers.fakes.make_image`.
* :mod:`tests.helpers.backbones`: tiny real models behind the real adapters (ConceptCLIP
  reference, Hugging Face CLIP and SigLIP from tiny configs), built offline in seconds.

Every backbone here passes :func:`conceptlens.models.testing.check_backbone`
(``tests/models/test_testing.py``).
"""
