import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conceptlens.errors import DeprecatedNameWarning
from conceptlens.models import ConceptCLIPBackbone, create_reference_model
from conceptlens.vocab.cache import FeatureCache
from conceptlens.vocab.concept import Concept
from conceptlens.vocab.prompts import DERM7PT_TEMPLATE, PromptTemplate
from conceptlens.vocab.scorer import ConceptScorer, ScoringConfig, available_presets, list_presets
from conceptlens.vocab.vocabulary import ConceptVocabulary
from tests.helpers.fakes import DynamicPaddingFakeBackbone, FakeBackbone, make_image

CONCEPTS = ["pigment network", "streaks", "blue white veil"]


@pytest.fixture(scope="module")
def tiny():
    model, processor = create_reference_model("tiny", seed=3)
    return model, processor, ConceptCLIPBackbone(model, processor, model_id="tiny-test")


@pytest.fixture(scope="module")
def tiny_images():
    return [make_image(10 + i, size=(40 + 7 * i, 30)) for i in range(3)]


@pytest.fixture(scope="module")
def derm_vocab():
    return ConceptVocabulary(
        [Concept(f"d:{i}", name, synonyms=("dummy synonym",)) for i, name in enumerate(CONCEPTS)],
        name="derm", modality="dermoscopy",
    )


def _raw_outputs(model, processor, images, texts):
    """The reference model's raw output dict for images and texts padded to 77, as the authors do."""
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    encoded = processor(text=texts, return_tensors="pt", return_offsets_mapping=True)
    with torch.no_grad():
        out = model(pixel_values=pixels, input_ids=encoded["input_ids"])
    return out, encoded


def _direct_scores(model, processor, images, *, mode, calibration, aggregation="max", top_k=5):
    """Scores from the raw model outputs: one template (Derm7pt), names only, span token vectors;
    ``aggregation`` defaults to the scorer's default, RC-Align's max over patches."""
    texts, spans = [], []
    for name in CONCEPTS:
        text, span = DERM7PT_TEMPLATE.fill(name)
        texts.append(text)
        spans.append(span)
    reference = DERM7PT_TEMPLATE.reference
    out, enc = _raw_outputs(model, processor, images, [*texts, reference])
    offsets, mask = enc["offset_mapping"], enc["attention_mask"].bool()
    tokens = out["text_token_features"]

    def span_vector(row, span):
        s, e = offsets[row, :, 0], offsets[row, :, 1]
        keep = mask[row] & (e > s)
        if span is not None:
            keep &= (s < span[1]) & (e > span[0])
        return F.normalize(tokens[row][keep].mean(0), dim=-1)

    u = torch.stack([span_vector(i, sp) for i, sp in enumerate(spans)])
    v = span_vector(len(texts), None)
    g = out["image_features"]
    t, r = out["text_features"][: len(texts)], out["text_features"][len(texts)]
    patches = F.normalize(out["image_token_features"], dim=-1)
    cos_patch = torch.einsum("bpd,kd->bkp", patches, u)
    ref_patch = (patches @ v)[:, None, :].expand_as(cos_patch)

    def agg(x):
        if aggregation == "mean":
            return x.mean(-1)
        if aggregation == "max":
            return x.max(-1).values
        return x.sort(-1, descending=True).values[..., :top_k].mean(-1)

    ls, lb = out["logit_scale"], out["logit_bias"]
    cls, clb = out["concept_logit_scale"], out["concept_logit_bias"]
    if calibration == "cosine":
        glob, loc = g @ t.T, agg(cos_patch)
    elif calibration == "sigmoid":
        glob = torch.sigmoid(ls * (g @ t.T) + lb)
        loc = torch.sigmoid(cls * agg(cos_patch) + clb)
    else:
        glob = torch.softmax(ls * torch.stack([g @ t.T, (g @ r)[:, None].expand(-1, len(texts))], -1), -1)[..., 0]
        loc = torch.softmax(cls * torch.stack([agg(cos_patch), agg(ref_patch)], -1), -1)[..., 0]
    return {"global": glob, "local": loc, "combined": 0.5 * glob + 0.5 * loc}[mode].numpy()


@pytest.mark.parametrize("calibration", ["cosine", "sigmoid", "paired_softmax"])
@pytest.mark.parametrize("mode", ["combined", "global", "local"])
def test_scores_equal_direct_computation_from_model_outputs(tiny, tiny_images, derm_vocab, mode, calibration):
    model, processor, backbone = tiny
    scorer = ConceptScorer(backbone, derm_vocab, mode=mode, calibration=calibration,
                           templates=[DERM7PT_TEMPLATE], synonyms=False, progress=False)
    scores = scorer.score(tiny_images)
    expected = _direct_scores(model, processor, tiny_images, mode=mode, calibration=calibration)
    np.testing.assert_allclose(scores.to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert scores.concept_ids == derm_vocab.ids
    assert scores.image_ids == ["image_0", "image_1", "image_2"]


@pytest.mark.parametrize("aggregation", ["mean", "topk"])
def test_local_aggregations_equal_direct_computation(tiny, tiny_images, derm_vocab, aggregation):
    model, processor, backbone = tiny
    scorer = ConceptScorer(backbone, derm_vocab, mode="local", calibration="sigmoid",
                           aggregation=aggregation, top_k=5, templates=[DERM7PT_TEMPLATE],
                           synonyms=False, progress=False)
    expected = _direct_scores(model, processor, tiny_images, mode="local", calibration="sigmoid",
                              aggregation=aggregation, top_k=5)
    np.testing.assert_allclose(scorer.score(tiny_images).to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_derm7pt_preset_equals_authors_per_pair_procedure(tiny, tiny_images, derm_vocab):
    """Literal re-implementation of the authors' Derm7pt script: one full forward per pair."""
    model, processor, backbone = tiny
    alpha = 0.5
    expected = np.zeros((len(tiny_images), len(CONCEPTS)))
    for k, concept in enumerate(CONCEPTS):
        prompts = ["This is dermatoscopy.", f"This is dermatoscopy of {concept}."]  # [neg, pos]
        texts = processor(text=prompts, return_tensors="pt")["input_ids"]  # padded to 77
        assert texts.shape[1] == 77
        for i, image in enumerate(tiny_images):
            img = processor(images=[image], return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                res = model(pixel_values=img, input_ids=texts)
            image_features = F.normalize(res["image_features"], dim=-1)
            text_features = F.normalize(res["text_features"], dim=-1)
            logits = torch.softmax(res["logit_scale"] * image_features @ text_features.t(), dim=-1)
            local_text = res["text_token_features"]
            local_text = F.normalize(torch.stack([local_text[0][-1, :], local_text[1][-1, :]]), dim=-1)
            local_image = F.normalize(res["image_token_features"], dim=-1)
            logits_local = (res["concept_logit_scale"] * local_image @ local_text.t()).mean(dim=1)
            logits_local = torch.softmax(logits_local, dim=-1)
            mixed = alpha * logits + (1 - alpha) * logits_local
            expected[i, k] = mixed[0][1].item()
    scorer = ConceptScorer.from_preset("derm7pt", backbone, derm_vocab, progress=False)
    scores = scorer.score(tiny_images)
    np.testing.assert_allclose(scores.to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert scores.config["preset"] == "derm7pt"
    assert scores.config["synonyms"] is False  # the vocabulary's synonyms are ignored
    assert scores.config["templates"] == [[DERM7PT_TEMPLATE.text, DERM7PT_TEMPLATE.reference]]


def test_score_tensor_matches_score_and_is_differentiable(tiny, tiny_images, derm_vocab):
    _, _, backbone = tiny
    scorer = ConceptScorer(backbone, derm_vocab, calibration="paired_softmax", progress=False)
    pixels = backbone.preprocess(tiny_images).requires_grad_(True)
    values = scorer.score_tensor(pixels)
    np.testing.assert_allclose(values.detach().numpy(), scorer.score(tiny_images).to_numpy(), rtol=1e-5, atol=1e-6)
    values[:, 1].sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_patch_scores_mean_gives_local_score(tiny, tiny_images, derm_vocab):
    _, _, backbone = tiny
    for calibration, link in [("cosine", lambda x: x), ("sigmoid", torch.sigmoid),
                              ("paired_softmax", torch.sigmoid)]:
        scorer = ConceptScorer(backbone, derm_vocab, mode="local", calibration=calibration,
                               aggregation="mean", progress=False)
        pixels = backbone.preprocess(tiny_images)
        patch = scorer.patch_scores_tensor(pixels)
        assert patch.shape == (3, len(CONCEPTS), 64)
        np.testing.assert_allclose(link(patch.mean(-1)).detach().numpy(),
                                   scorer.score(tiny_images).to_numpy(), rtol=1e-5, atol=1e-6)


def test_patch_scores_max_gives_default_local_score(tiny, tiny_images, derm_vocab):
    """With the default (RC-Align) max aggregation the monotone links commute with the max."""
    _, _, backbone = tiny
    for calibration, link in [("cosine", lambda x: x), ("sigmoid", torch.sigmoid)]:
        scorer = ConceptScorer(backbone, derm_vocab, mode="local", calibration=calibration, progress=False)
        assert scorer.config.aggregation == "max"
        patch = scorer.patch_scores_tensor(backbone.preprocess(tiny_images))
        np.testing.assert_allclose(link(patch.amax(-1)).detach().numpy(),
                                   scorer.score(tiny_images).to_numpy(), rtol=1e-5, atol=1e-6)


def test_prompt_ensembling_averages_normalised_embeddings(tiny, tiny_images):
    model, processor, backbone = tiny
    vocab = ConceptVocabulary([Concept("x:1", "streaks", synonyms=("dots",))])
    templates = [DERM7PT_TEMPLATE, PromptTemplate("A dermoscopic image showing {concept}.", "A dermoscopic image.")]
    scorer = ConceptScorer(backbone, vocab, mode="global", calibration="cosine", templates=templates,
                           progress=False)
    texts = [t.fill(term)[0] for t in templates for term in ("streaks", "dots")]
    out, _ = _raw_outputs(model, processor, tiny_images, texts)
    t = F.normalize(F.normalize(out["text_features"], dim=-1).mean(0), dim=-1)
    np.testing.assert_allclose(scorer.score(tiny_images).to_numpy()[:, 0],
                               (out["image_features"] @ t).numpy(), rtol=1e-5, atol=1e-6)


# ---- caching, memoisation, robustness (fake backbone: counts its calls) ----------------------


def test_text_embeddings_are_computed_once_per_vocabulary_and_prompts(vocabulary, images):
    backbone = FakeBackbone(model_id="memo-test")
    ConceptScorer(backbone, vocabulary, progress=False).score(images[:1])
    calls = backbone.text_calls
    assert calls > 0
    ConceptScorer(backbone, vocabulary, alpha=0.2, calibration="sigmoid", progress=False).score(images[:1])
    assert backbone.text_calls == calls  # same prompts: memo hit
    ConceptScorer(backbone, vocabulary, synonyms=False, progress=False).score(images[:1])
    assert backbone.text_calls > calls  # different prompts: encoded again


def test_new_vocabulary_and_config_never_rerun_image_tower(tmp_path, backbone, vocabulary, other_vocabulary, images):
    scorer = ConceptScorer(backbone, vocabulary, cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    first = scorer.score(images)
    assert backbone.image_calls == len(images)
    forwards = backbone.image_forwards
    second = ConceptScorer(backbone, other_vocabulary, cache_dir=tmp_path / "cache", progress=False).score(images)
    assert backbone.image_forwards == forwards  # zero image-tower passes
    assert second.concept_ids == other_vocabulary.ids and len(second) == len(images)
    rescored = scorer.with_config(alpha=0.9, calibration="paired_softmax", aggregation="max").score(images)
    assert backbone.image_forwards == forwards
    assert not np.allclose(rescored.to_numpy(), first.to_numpy())
    fresh = FakeBackbone()  # same weights, no cache: must give the cached numbers
    np.testing.assert_allclose(ConceptScorer(fresh, vocabulary, progress=False).score(images).to_numpy(),
                               first.to_numpy(), rtol=1e-6)


def test_bad_images_are_reported_and_the_rest_scored(tmp_path, backbone, vocabulary, image_folder):
    (image_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    inputs = [*sorted(map(str, image_folder.glob("img*.png"))), str(image_folder / "broken.png"),
              str(tmp_path / "missing.png"), 42]
    scores = ConceptScorer(backbone, vocabulary, batch_size=3, progress=False).score(inputs)
    assert scores.image_ids == inputs[:5]
    assert scores.errors["image"].tolist() == [inputs[5], inputs[6], "image_7"]
    assert "broken.png" in scores.errors["reason"][0]
    assert "missing.png" in scores.errors["reason"][1]
    assert np.isfinite(scores.to_numpy()).all()


def test_killed_run_resumes_from_cache(tmp_path, vocabulary, images):
    backbone = FakeBackbone()
    backbone.fail_on_image_forward = 2
    scorer = ConceptScorer(backbone, vocabulary, cache_dir=tmp_path, batch_size=2, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        scorer.score(images)
    assert len(FeatureCache(tmp_path)) == 2  # the first batch survived
    backbone.fail_on_image_forward = None
    backbone.image_calls = 0
    scores = scorer.score(images)
    assert backbone.image_calls == len(images) - 2  # only the missing ones
    assert len(scores) == len(images)


def test_identical_pixels_share_a_cache_entry(tmp_path, backbone, vocabulary, images):
    scorer = ConceptScorer(backbone, vocabulary, cache_dir=tmp_path, progress=False)
    scores = scorer.score({"a": images[0], "b": images[0].copy(), "c": images[1]})
    assert backbone.image_calls == 3  # computed in one batch before the cache is written
    assert len(FeatureCache(tmp_path)) == 2
    np.testing.assert_allclose(scores.table.loc["a"], scores.table.loc["b"])


def test_scores_carry_provenance(backbone, vocabulary, images):
    scores = ConceptScorer(backbone, vocabulary, progress=False).score(images[:2])
    assert scores.vocabulary_hash == vocabulary.hash
    assert scores.backbone["key"] == backbone.identity.key
    assert scores.concept_names["t:veil"] == "blue whitish veil"
    assert scores.config["mode"] == "combined" and scores.config["alpha"] == 0.5
    assert len(scores.errors) == 0


def test_invalid_settings_raise_clear_errors(backbone, vocabulary):
    with pytest.raises(ValueError, match="mode must be one of"):
        ConceptScorer(backbone, vocabulary, mode="both")
    with pytest.raises(ValueError, match="alpha"):
        ConceptScorer(backbone, vocabulary, alpha=1.5)
    with pytest.raises(ValueError, match="calibration"):
        ScoringConfig(calibration="softmax")
    with pytest.raises(KeyError, match="unknown scoring preset 'derm8pt'"):
        ConceptScorer.from_preset("derm8pt", backbone, vocabulary)
    with pytest.raises(TypeError, match="vocabulary must be a ConceptVocabulary"):
        ConceptScorer(backbone, ["streaks"])
    with pytest.raises(ValueError, match="pixel_values"):
        ConceptScorer(backbone, vocabulary).score_tensor(torch.zeros(3, 18, 18))
    assert "derm7pt" in list_presets()
    with pytest.warns(DeprecatedNameWarning, match="list_presets"):
        assert available_presets() == list_presets()


def test_concept_maps_one_forward_for_all_concepts(backbone, vocabulary, images):
    scorer = ConceptScorer(backbone, vocabulary, calibration="sigmoid", progress=False)
    forwards = backbone.image_forwards
    maps = scorer.concept_maps(images[0])
    assert backbone.image_forwards == forwards + 1
    assert maps.maps.shape == (3, 4, 4) and maps.concept_ids == vocabulary.ids
    patch = scorer.patch_scores_tensor(backbone.preprocess([images[0]]))[0]
    np.testing.assert_allclose(maps.maps.reshape(3, -1), patch.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps.scores, scorer.score([images[0]]).to_numpy()[0], rtol=1e-6)
    assert maps.upsampled("streaks").shape == (images[0].height, images[0].width)
    assert maps.covered_fraction == pytest.approx((16 / 18, 16 / 18))


def test_concept_maps_subset_and_unknown_concept(backbone, vocabulary, images):
    scorer = ConceptScorer(backbone, vocabulary, progress=False)
    maps = scorer.concept_maps(images[1], ["t:veil", "streaks"])
    assert maps.concept_ids == ["t:veil", "t:streaks"]
    full = scorer.concept_maps(images[1])
    np.testing.assert_allclose(maps.maps[0], full.maps[2])
    with pytest.raises(KeyError, match="'melanoma'"):
        scorer.concept_maps(images[1], ["streaks", "melanoma"])


def test_last_token_needs_fixed_length_padding(vocabulary, images):
    backbone = DynamicPaddingFakeBackbone(model_id="dynamic")
    with pytest.raises(ValueError, match="pads every text to one fixed length"):
        ConceptScorer(backbone, vocabulary, text_token="last", batch_size=1, progress=False).score(images[:1])
    scores = ConceptScorer(backbone, vocabulary, text_token="span", batch_size=1, progress=False).score(images[:1])
    np.testing.assert_allclose(  # span vectors do not depend on the padding
        scores.to_numpy(), ConceptScorer(FakeBackbone(), vocabulary, progress=False).score(images[:1]).to_numpy(),
        rtol=1e-5)


def test_paired_softmax_needs_references_even_after_a_memoised_cosine_run(vocabulary, images):
    backbone = FakeBackbone()
    bare = ConceptVocabulary(
        [*vocabulary, Concept("t:bare", "dots", prompts=("dots",))], name="bare", modality="dermoscopy"
    )
    cosine = ConceptScorer(backbone, bare, progress=False).score(images[:1])
    assert list(cosine.table.columns) == [*vocabulary.ids, "t:bare"]
    with pytest.raises(ValueError, match=r"reference prompt.*'t:bare'"):
        ConceptScorer(backbone, bare, calibration="paired_softmax", progress=False).score(images[:1])


def test_text_memo_tells_vocabularies_apart_by_modality(vocabulary, images):
    backbone = FakeBackbone()
    fundus = ConceptVocabulary(list(vocabulary), name="test", modality="fundus")
    assert fundus.hash == vocabulary.hash  # the hash covers the concepts only
    derm = ConceptScorer(backbone, vocabulary, mode="global", progress=False).score(images[:2])
    other = ConceptScorer(backbone, fundus, mode="global", progress=False).score(images[:2])
    direct = ConceptScorer(FakeBackbone(), fundus, mode="global", progress=False).score(images[:2])
    np.testing.assert_allclose(other.table.to_numpy(), direct.table.to_numpy(), rtol=1e-6)
    assert not np.allclose(other.table.to_numpy(), derm.table.to_numpy())
