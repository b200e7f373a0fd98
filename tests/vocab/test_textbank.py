import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conceptlens.vocab.scorer import ConceptScorer
from conceptlens.vocab.textbank import TextBankStore, bank_key, clear_text_memo
from tests.helpers.fakes import FakeBackbone

REPO = Path(__file__).resolve().parents[2]

_SECOND_PROCESS = """
import sys
sys.path.insert(0, sys.argv[2])
from conceptlens.vocab.scorer import ConceptScorer
from tests.helpers.fakes import FakeBackbone, make_image
from conceptlens.vocab.vocabulary import ConceptVocabulary
from conceptlens.vocab.concept import Concept
vocabulary = ConceptVocabulary(
    [Concept("t:network", "pigment network", synonyms=("reticular pattern",)),
     Concept("t:streaks", "streaks"),
     Concept("t:veil", "blue whitish veil", synonyms=("blue-white veil",))],
    name="test", modality="dermoscopy")
backbone = FakeBackbone(model_id="bank-test")
ConceptScorer(backbone, vocabulary, cache_dir=sys.argv[1], progress=False).score([make_image(0)])
print(backbone.text_calls)
"""


def _text_calls_in_a_new_process(store):
    out = subprocess.run([sys.executable, "-c", _SECOND_PROCESS, str(store), str(REPO)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_a_second_process_runs_the_text_tower_zero_times(tmp_path):
    assert _text_calls_in_a_new_process(tmp_path) > 0
    assert _text_calls_in_a_new_process(tmp_path) == 0
    assert len(list((tmp_path / "text").glob("*.safetensors"))) == 1


def test_banks_from_disk_equal_computed_ones(tmp_path, vocabulary, images):
    computed = ConceptScorer(FakeBackbone(model_id="disk-1"), vocabulary, progress=False,
                             text_cache_dir=tmp_path, calibration="paired_softmax")
    first = computed.score(images[:2])
    clear_text_memo()
    backbone = FakeBackbone(model_id="disk-1")
    again = ConceptScorer(backbone, vocabulary, progress=False, text_cache_dir=tmp_path,
                          calibration="paired_softmax")
    assert again.score(images[:2]).table.equals(first.table) and backbone.text_calls == 0
    for name, tensor in computed.text_bank().tensors().items():
        assert torch.equal(tensor, getattr(again.text_bank(), name))


def test_other_prompts_or_vocabulary_are_encoded_again(tmp_path, vocabulary, other_vocabulary, images):
    ConceptScorer(FakeBackbone(model_id="disk-2"), vocabulary, progress=False,
                  text_cache_dir=tmp_path).score(images[:1])
    clear_text_memo()
    for scorer in (ConceptScorer(FakeBackbone(model_id="disk-2"), vocabulary, synonyms=False,
                                 progress=False, text_cache_dir=tmp_path),
                   ConceptScorer(FakeBackbone(model_id="disk-2"), other_vocabulary,
                                 progress=False, text_cache_dir=tmp_path)):
        scorer.score(images[:1])
        assert scorer.backbone.text_calls > 0


def test_damaged_or_mismatched_bank_files_are_recomputed(tmp_path, vocabulary, images):
    backbone = FakeBackbone(model_id="disk-3")
    scorer = ConceptScorer(backbone, vocabulary, progress=False, text_cache_dir=tmp_path)
    expected = scorer.score(images[:1])
    key = bank_key(backbone, vocabulary, scorer.config.prompt_key())
    store = TextBankStore(tmp_path)
    assert store.get(key, n_concepts=3, embed_dim=8) is not None
    assert store.get(key, n_concepts=4, embed_dim=8) is None  # other vocabulary size
    assert store.get(key + "x", n_concepts=3, embed_dim=8) is None  # other key
    store.path_for(key).write_bytes(b"not safetensors")
    clear_text_memo()
    fresh = FakeBackbone(model_id="disk-3")
    again = ConceptScorer(fresh, vocabulary, progress=False, text_cache_dir=tmp_path)
    assert again.score(images[:1]).table.equals(expected.table) and fresh.text_calls > 0
    assert store.get(key, n_concepts=3, embed_dim=8) is not None  # rewritten


def _banks_longest_and_77(backbone, monkeypatch, text_token="span"):
    """The demo vocabulary's bank with dynamic padding and with every prompt padded to 77."""
    from conceptlens.vocab import ConceptVocabulary, textbank

    vocabulary = ConceptVocabulary.builtin("demo")
    lengths: list[int] = []
    forward = backbone.forward_texts

    def counting(texts, padding="max_length"):
        out = forward(texts, padding=padding)
        lengths.append(int(out.token_embeds.shape[1]))
        return out

    monkeypatch.setattr(backbone, "forward_texts", counting)
    build = dict(templates=None, synonyms=True, text_token=text_token, need_reference=False)
    dynamic = textbank.build_text_bank(backbone, vocabulary, **build)
    dynamic_lengths, lengths[:] = list(lengths), []
    monkeypatch.setattr(textbank, "_accepts_padding", lambda _: False)
    fixed = textbank.build_text_bank(backbone, vocabulary, **build)
    return dynamic, fixed, dynamic_lengths, list(lengths)


@pytest.mark.parametrize("model", ["demo", "tiny"])
def test_span_mode_pads_to_the_longest_prompt_with_the_same_vectors(model, monkeypatch):
    from conceptlens.models import ConceptCLIPBackbone, create_reference_model, load_backbone

    if model == "demo":
        backbone = load_backbone("demo")
    else:
        backbone = ConceptCLIPBackbone(*create_reference_model("tiny", seed=0), model_id="tiny-pad")
    dynamic, fixed, dynamic_lengths, fixed_lengths = _banks_longest_and_77(backbone, monkeypatch)
    assert set(fixed_lengths) == {77} and max(dynamic_lengths) < 77
    for name, tensor in fixed.tensors().items():
        torch.testing.assert_close(getattr(dynamic, name), tensor, atol=1e-6, rtol=0)


def test_last_token_mode_keeps_the_fixed_length(monkeypatch):
    from conceptlens.models import load_backbone

    dynamic, fixed, dynamic_lengths, _ = _banks_longest_and_77(load_backbone("demo"), monkeypatch, "last")
    assert set(dynamic_lengths) == {77}
    for name, tensor in fixed.tensors().items():
        assert torch.equal(getattr(dynamic, name), tensor)
