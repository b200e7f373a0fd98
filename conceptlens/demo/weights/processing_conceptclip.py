"""Processor of the ConceptCLIP-architecture reference model.

A SigLIP image processor (squash resize, bicubic, rescale to [0, 1], mean = std = 0.5)
plus a BERT WordPiece tokenizer. Texts are padded to ``max_length`` (77) by default, like
the authors' evaluations: dynamic padding would change which position is "last".

This file is *remote code*: ``save_pretrained`` copies it into the saved folder, so it may
import only ``transformers`` (and the sibling files of this folder).
"""

from __future__ import annotations

from typing import Any

from transformers import BatchFeature, ProcessorMixin

__all__ = ["ConceptCLIPProcessor"]


class ConceptCLIPProcessor(ProcessorMixin):
    """Image processor + tokenizer with the authors' text padding.

    Args:
        image_processor: A :class:`~transformers.SiglipImageProcessor`.
        tokenizer: A BERT tokenizer (WordPiece, lower case).
        max_length: Length texts are padded / truncated to (default 77, the authors'
            context length).

    Example:
        >>> from conceptlens.models import create_reference_model
        >>> _, processor = create_reference_model("tiny")
        >>> processor(text=["a mole"], return_tensors="pt")["input_ids"].shape
        torch.Size([1, 77])
    """

    def __init__(self, image_processor: Any, tokenizer: Any, max_length: int = 77) -> None:
        self.max_length = int(max_length)
        super().__init__(image_processor, tokenizer)

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        padding: bool | str = "max_length",
        truncation: bool = True,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocess images and/or tokenise texts.

        Args:
            images: One image or a list (PIL, numpy, tensor), or ``None``.
            text: One string or a list, or ``None``.
            padding: Tokenizer padding strategy; ``"max_length"`` by default.
            truncation: Truncate texts longer than ``max_length``.
            max_length: Overrides :attr:`max_length` for this call.
            return_tensors: ``"pt"`` (default), ``"np"`` or ``None``.
            **kwargs: Passed to the tokenizer (e.g. ``return_offsets_mapping=True``).

        Returns:
            :class:`~transformers.BatchFeature` with ``pixel_values`` and/or ``input_ids``,
            ``attention_mask`` (and whatever else the tokenizer returns).
        """
        if images is None and text is None:
            raise ValueError("ConceptCLIPProcessor needs `images`, `text` or both")
        data: dict[str, Any] = {}
        if text is not None:
            encoded = self.tokenizer(
                text,
                padding=padding,
                truncation=truncation,
                max_length=self.max_length if max_length is None else max_length,
                return_tensors=return_tensors,
                **kwargs,
            )
            data.update(encoded)
        if images is not None:
            pixels = self.image_processor(images, return_tensors=return_tensors)
            data["pixel_values"] = pixels["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        """Names of the model inputs this processor produces."""
        return ["pixel_values", "input_ids", "attention_mask"]
