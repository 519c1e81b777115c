"""The HTP encoder as an `mteb` model: the package's encoder protocol (batches from its data loaders, query and
document prompt types) and its model metadata, so `mteb.evaluate` runs any MTEB task (BEIR, LongEmbed) with HTP.

    from pipeline.integrations.mteb import HTPModel
    import mteb
    results = mteb.evaluate(HTPModel(), mteb.get_tasks(tasks=["SciFact"]))
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from htp import EncoderConfig, HTPEncoder
from pipeline.config import config_hash
from pipeline.records import full_text


class HTPModel(AbsEncoder):
    """An HTPEncoder (the default one unless `encoder` or `config` is given) behind mteb's EncoderProtocol: queries
    get the query prompt, everything else is encoded as a document; vectors are unit length, compared by cosine."""

    def __init__(self, encoder: HTPEncoder | None = None, config: EncoderConfig | None = None) -> None:
        self.model = encoder or HTPEncoder(config or EncoderConfig())
        settings = self.model.config
        model_name = str(settings.model).rstrip("/").rsplit("/", 1)[-1]
        self.mteb_model_meta = ModelMeta(
            loader=None,
            name=f"htp-index/{model_name}-{settings.method}",
            revision=config_hash(settings.vector_settings()),  # what decides the vectors
            release_date=None,
            languages=None,
            n_parameters=None,
            memory_usage_mb=None,
            max_tokens=settings.max_length,
            embed_dim=self.model.dimension,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch"],
            similarity_fn_name=ScoringFunction.COSINE,
            use_instructions=False,
            training_datasets=set(),  # training-free: HTP rewires a decoder at inference
        )

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Vectors [n, d] of every text the data loader `inputs` yields, in order."""
        kind = "query" if prompt_type == PromptType.query else "document"
        texts = [text for batch in inputs for text in batch_texts(batch)]
        return self.model.encode(texts, kind=kind, show_progress=False)


def batch_texts(batch: dict) -> list[str]:
    """The texts of one mteb batch as htp-index joins them: a corpus batch's title and body the way a build does
    (pipeline.records), any other batch's `text`."""
    if "body" not in batch:
        return list(batch["text"])
    titles = batch.get("title", [""] * len(batch["body"]))
    return [full_text(title, body) for title, body in zip(titles, batch["body"])]
