import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conceptlens.models import ConceptCLIPBackbone, create_reference_model
from conceptlens.vocab.scorer import ConceptScorer
from conceptlens.vocab.scores import ConceptScores
from conceptlens.vocab.zeroshot import retrieve_concepts, retrieve_images, zero_shot_classify
from tests.helpers.fakes import make_image

LABELS = ["chest x-ray", "brain mri", "skin lesion"]


@pytest.fixture(scope="module")
def tiny():
    model, processor = create_reference_model("tiny", seed=5)
    return model, processor, ConceptCLIPBackbone(model, processor, model_id="tiny-zs")


@pytest.fixture(scope="module")
def pictures():
    return [make_image(20 + i, size=(50, 40 + 5 * i)) for i in range(3)]


def test_global_recipe_equals_upstream_readme_snippet(tiny, pictures):
    model, processor, backbone = tiny
    expected = []
    for image in pictures:  # the README, literally, one image at a time
        texts = [f"a medical image of {label}" for label in LABELS]
        inputs = processor(images=image, text=texts, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            outputs = model(**inputs)
            logits = (outputs["logit_scale"] * outputs["image_features"] @ outputs["text_features"].t()).softmax(dim=-1)[0]
        expected.append(logits.numpy())
    probs = zero_shot_classify(backbone, pictures, LABELS, progress=False)
    assert list(probs.columns) == LABELS and list(probs.index) == ["image_0", "image_1", "image_2"]
    np.testing.assert_allclose(probs.to_numpy(), np.stack(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_conceptclip_recipe_equals_authors_zero_shot_procedure(tiny, pictures):
    """Literal re-implementation of the authors' build_zero_shot_*classifier + evaluate_with_local.

    The authors find the class-name tokens by the first occurrence of each of its word pieces
    in the prompt; the library uses the name's character span. The two agree when no piece of
    the name occurs earlier in the prompt, as for these whole-word names.
    """
    model, processor, backbone = tiny
    labels = ["melanoma", "nevus", "basal cell carcinoma"]
    templates = ["a chest radiology presents {}", "a medical image of {}"]
    topk, alpha = 16, 0.5
    tokenize = processor.tokenizer.tokenize
    global_cls, local_cls = [], []
    for name in labels:
        texts = [t.format(name) for t in templates]
        ids = processor(text=texts, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids)
        emb = F.normalize(out["text_features"], dim=-1).mean(dim=0)
        global_cls.append(emb / emb.norm())
        per_template = []
        name_tokens = tokenize(name)
        for row, text in enumerate(texts):
            text_tokens = tokenize(text)
            indices = [text_tokens.index(tok) + 1 for tok in name_tokens if tok in text_tokens]
            per_template.append(out["text_token_features"][row][indices].mean(dim=0))
        local_cls.append(torch.stack(per_template).mean(dim=0))
    global_w = torch.stack(global_cls).T
    local_w = torch.stack(local_cls)
    local_w = (local_w / local_w.norm(dim=1, keepdim=True)).T
    pixels = processor(images=pictures, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = model(pixel_values=pixels)
    image_features = F.normalize(output["image_features"], dim=-1)
    global_core = torch.softmax(output["logit_scale"] * image_features @ global_w, dim=-1)
    tokens = F.normalize(output["image_token_features"], dim=-1)
    local_core = torch.topk(output["concept_logit_scale"] * tokens @ local_w, k=topk, dim=1)[0].mean(dim=1)
    local_core = torch.softmax(local_core, dim=-1)
    expected = alpha * local_core + (1 - alpha) * global_core

    probs = zero_shot_classify(backbone, pictures, labels, templates=templates, recipe="conceptclip",
                               top_k=topk, alpha=alpha, progress=False)
    np.testing.assert_allclose(probs.to_numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    only_global = zero_shot_classify(backbone, pictures, labels, templates=templates, recipe="conceptclip",
                                     top_k=topk, alpha=1.0, progress=False)
    np.testing.assert_allclose(only_global.to_numpy(), global_core.numpy(), rtol=1e-5, atol=1e-6)


def test_zero_shot_reports_bad_images(tiny, pictures):
    _, _, backbone = tiny
    probs = zero_shot_classify(backbone, [pictures[0], "no/such/file.png"], LABELS, progress=False)
    assert list(probs.index) == ["image_0"]
    assert probs.attrs["errors"]["image"].tolist() == ["no/such/file.png"]


def test_zero_shot_argument_errors(tiny, pictures):
    _, _, backbone = tiny
    with pytest.raises(ValueError, match="exactly one slot"):
        zero_shot_classify(backbone, pictures, LABELS, templates=["no slot here"])
    with pytest.raises(ValueError, match="distinct"):
        zero_shot_classify(backbone, pictures, ["a", "a"])
    with pytest.raises(ValueError, match="recipe"):
        zero_shot_classify(backbone, pictures, LABELS, recipe="local")


def _planted_scores():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.uniform(0.0, 0.5, (6, 3)), index=[f"img{i}" for i in range(6)],
                         columns=["c:a", "c:b", "c:c"])
    table.loc["img4", "c:b"] = 0.99  # the planted image for concept b
    table.loc["img2", ["c:a", "c:b", "c:c"]] = [0.1, 0.2, 0.95]
    return ConceptScores(table, concept_names={"c:a": "alpha", "c:b": "beta", "c:c": "gamma"})


def test_retrieve_images_puts_the_planted_image_first():
    scores = _planted_scores()
    top = retrieve_images(scores, "beta", k=3)
    assert top.index[0] == "img4" and top["rank"].tolist() == [1, 2, 3]
    assert top["score"].is_monotonic_decreasing
    assert retrieve_images(scores, "c:b", k=100).shape[0] == 6
    with pytest.raises(KeyError, match="'delta'"):
        retrieve_images(scores, "delta")


def test_retrieve_images_resolves_concepts_like_the_vocabulary():
    from conceptlens.errors import UnknownConceptError

    scores = _planted_scores()
    assert retrieve_images(scores, "BETA", k=1).index[0] == "img4"  # case-insensitive name
    with pytest.raises(UnknownConceptError, match="beta"):  # suggests the close match
        retrieve_images(scores, "betta")


def test_retrieve_concepts_ranks_an_images_concepts():
    top = retrieve_concepts(_planted_scores(), "img2", k=2)
    assert top.index.tolist() == ["c:c", "c:b"] and top["name"].tolist() == ["gamma", "beta"]
    with pytest.raises(KeyError, match="'img9'"):
        retrieve_concepts(_planted_scores(), "img9")


def test_retrieval_with_a_scorer_finds_the_planted_image(backbone, vocabulary, images):
    scorer = ConceptScorer(backbone, vocabulary, mode="global", progress=False)
    target = scorer.text_bank().concept_global[1]  # "streaks"
    # plant: the image whose global embedding is closest to the concept is copied under a new name
    scores = scorer.score(images)
    best = scores.table["t:streaks"].idxmax()
    planted = {f"other{i}": im for i, im in enumerate(images) if f"image_{i}" != best}
    planted["planted"] = images[int(best.split("_")[1])]
    top = retrieve_images(scorer, "t:streaks", k=1, images=planted)
    assert top.index.tolist() == ["planted"]
    assert top["score"].iloc[0] == pytest.approx(float(scores.table.loc[best, "t:streaks"]))
    assert target.shape == (backbone.embed_dim,)
    with pytest.raises(ValueError, match="images="):
        retrieve_images(scorer, "t:streaks")
