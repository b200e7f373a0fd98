"""conceptlens.train on a second synthetic world with more than 8 concepts."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.models.conceptclip import ConceptCLIPBackbone
from conceptlens.train import (
    ConceptTrainingData,
    TrainingConfig,
    TrainingError,
    captions_from_labels,
    encode_captions,
    evaluate_concept_model,
    modality_words,
    train_concept_model,
    vocabulary_words,
)
from conceptlens.vocab import Concept, ConceptVocabulary
from tests.train.world import generate_shapes, vocabulary

SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def test_captions_from_labels_spans_name_the_concepts():
    vocab = vocabulary()
    _, labels, _ = generate_shapes(40, seed=3)
    captions, mentions = captions_from_labels(labels, vocab, seed=1)
    names = {k: set(c.terms) for k, c in enumerate(vocab)}
    for row, caption, spans in zip(labels, captions, mentions, strict=True):
        assert sorted(k for k, _, _ in spans) == sorted(np.flatnonzero(row))
        for k, start, end in spans:
            assert caption[start:end] in names[k]
        if not spans:  # an image without concepts gets a template's reference sentence
            assert caption in {"This is a medical image.", "A medical image."}
    assert modality_words(vocab) == ["image", "medical"]


def test_eleven_concepts_encode_without_overflow_and_words_are_whole_tokens():
    vocab = ConceptVocabulary([*vocabulary(), Concept("robots:gripper", "robot gripper")], name="x")
    labels = np.zeros((3, len(vocab)), np.int64)
    labels[0, -1] = labels[1, 9] = labels[1, 10] = 1
    captions, mentions = captions_from_labels(labels, vocab, seed=0, synonyms=False)
    from conceptlens.models.reference.factory import build_tokenizer

    tokenizer = build_tokenizer(vocabulary_words(vocab, captions))
    assert tokenizer.tokenize("robot gripper") == ["robot", "gripper"]  # not r ##o ##b ...
    ids, spans = encode_captions(tokenizer, captions, mentions, len(vocab), modality_words(vocab))
    assert spans.shape == (3, len(vocab) + 1, ids.shape[1])
    assert bool(spans[0, 11].any()) and bool(spans[1, 10].any()) and not bool(spans[2, :12].any())
    for i, caption in enumerate(captions):  # the modality channel marks "medical image"
        assert bool(spans[i, 12].any()) == ("medical image" in caption.lower())
    with pytest.raises(TrainingError, match="concept index"):
        encode_captions(tokenizer, captions[:1], [[(12, 0, 4)]], len(vocab))


def test_a_few_steps_train_and_errors():
    vocab = vocabulary()
    images, labels, masks = generate_shapes(48, seed=4)
    data = ConceptTrainingData(images, labels, list(vocab.ids), masks=masks)
    config = TrainingConfig(image_size=32, steps=2, batch_size=16, warmup_steps=1, n_train=48,
                            vision_config=SMALL, text_config=SMALL)
    model, processor, history = train_concept_model(data, config, vocabulary=vocab, progress=False)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    assert {"global_loss", "local_loss", "patch_loss"} <= set(history)
    with pytest.raises(TrainingError, match="captions"):
        train_concept_model(data, config, progress=False)
    with pytest.raises(TrainingError, match="image_size"):
        train_concept_model(data, TrainingConfig(image_size=64, steps=1, batch_size=2), vocabulary=vocab)
    with pytest.raises(TrainingError, match="concepts must be"):
        ConceptTrainingData(images, labels[:, :5], list(vocab.ids))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_learns_visible_concepts_of_a_second_world(seed):
    # Measured (seed 0, 200 steps of 32 on 800 images, 2 threads, 2-5 min on a busy 2-core
    # machine): AUC 1.000 for all 10 visible concepts on 300 held-out images, 0.507 for the
    # invisible control; 80 steps were not enough (one concept at 0.90). Seeds 0 and 1 pass.
    vocab = vocabulary()
    images, labels, masks = generate_shapes(800, seed=1 + seed)
    data = ConceptTrainingData(images, labels, list(vocab.ids), masks=masks)
    config = TrainingConfig(seed=seed, image_size=32, steps=200, batch_size=32, warmup_steps=20,
                            n_train=800, threads=2)
    model, processor, _ = train_concept_model(data, config, vocabulary=vocab, progress=False)
    held_images, held_labels, held_masks = generate_shapes(300, seed=100 + seed)
    evaluation = evaluate_concept_model(ConceptCLIPBackbone(model, processor), vocab, held_images,
                                        held_labels, held_masks)
    visible = evaluation.table.drop(index="shapes:lucky_charm")
    assert (visible["auc"] >= 0.95).all(), visible
    assert abs(evaluation.table.loc["shapes:lucky_charm", "auc"] - 0.5) < 0.12
    assert "Concept model" in evaluation._repr_html_()
