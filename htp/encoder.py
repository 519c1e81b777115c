"""HTPEncoder: texts in, L2-normalised float32 vectors out, for HTP and its baselines on one code path."""

from __future__ import annotations

import copy
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from htp.attention import use_product_attention
from htp.batching import token_budget_batches
from htp.config import KINDS, EncoderConfig
from htp.errors import EncoderTypeError, EncoderValueError
from htp.heap import keep_freed_memory
from htp.layout import PLACEHOLDER, Layout, build_layout
from htp.models import dtype_name, load_model, pick_device, pick_dtype
from htp.outputs import PRECISIONS, converted, quantised
from htp.packing import can_pack, pack_linears
from htp.pooling import last_pool, mean_pool, normalise
from htp.rewire import Copies, EarlyExit, rewired
from htp.segment import Segmenter, make_blocks
from htp.turns import Turns


@dataclass
class EncodeStats:
    """Running counts: texts, pooled text tokens, sequence tokens, positions computed (with padding), truncations."""

    texts: int = 0
    text_tokens: int = 0
    sequence_tokens: int = 0
    computed_positions: int = 0
    truncated: int = 0
    seconds: float = 0.0  # in forward passes


_TURNS: weakref.WeakKeyDictionary[torch.nn.Module, Turns] = weakref.WeakKeyDictionary()
_TURNS_GUARD = threading.Lock()


def _model_turns(model: torch.nn.Module) -> Turns:
    """One set of turns per model object, shared by every encoder built on it."""
    with _TURNS_GUARD:
        return _TURNS.setdefault(model, Turns())


def _keep_freed_memory_on(device: torch.device, config: EncoderConfig) -> None:
    """htp.heap's setting, process-wide, when this encoder computes on the CPU and its config asks for it."""
    if config.reuse_memory and device.type == "cpu":
        keep_freed_memory()


def decoder_parts(model: PreTrainedModel) -> tuple[Any, torch.nn.ModuleList]:
    """The base decoder (embeddings -> layers -> norm) and its layer list, for Llama- and Gemma-style models."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(base, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise EncoderTypeError(f"{type(model).__name__} has no `.layers` list of decoder layers; HTP cannot rewire it")
    return base, layers


class HTPEncoder:
    """A decoder-only LM used as a training-free text embedder (HTP, TP, Echo, vanilla mean/last)."""

    def __init__(
        self,
        config: EncoderConfig | None = None,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        self.config = (config or EncoderConfig()).resolved()
        if model is None or tokenizer is None:
            device = pick_device(self.config.device)
            # before the weights load: set later, the heap may have no room left to grow in place (measured: no effect)
            _keep_freed_memory_on(device, self.config)
            model, tokenizer = load_model(
                self.config.model, device, pick_dtype(self.config.dtype, device), self.config.cache_dir
            )
        self.model, self.tokenizer = model.eval(), tokenizer
        self.base, self.layers = decoder_parts(model)
        self.embed = self.base.get_input_embeddings()
        self.device = next(model.parameters()).device
        self.n_layers = len(self.layers)
        assert self.config.exit_layer is not None  # resolved() fills every default
        self.exit_layer: int = self.config.exit_layer  # a hidden-state index, as configured
        self.layers_run = self.layers_to_run(self.exit_layer)  # decoder layers a forward pass runs
        _keep_freed_memory_on(self.device, self.config)  # a model passed in
        if self.config.pack_weights and self.device.type == "cpu" and can_pack():  # in place, on the shared model
            pack_linears(self.layers[: self.layers_run])
        if self.device.type == "cpu":  # in place too; only bfloat16 and float16 passes take the products
            use_product_attention(model, self.config.attention_products)
        settings = model.config
        self.causal = not (
            getattr(settings, "use_bidirectional_attention", False) or getattr(settings, "is_causal", True) is False
        )
        if not self.causal and self.config.spec.rewired:
            raise EncoderValueError(
                f"{type(model).__name__} attends in both directions (a bidirectional embedder), so there is no causal "
                f"mask for {self.config.method.upper()} to work around and its placeholders would see the padding: use "
                "method vanilla-mean (or vanilla-last, echo) with this model"
            )
        window = self.config.window
        if self.config.spec.rewired and window is not None and window[0] >= self.layers_run:
            raise EncoderValueError(
                f"encoder.window {list(window)} starts at or after the exit layer ({self.layers_run} "
                f"of this {self.n_layers}-layer model), so nothing would be rewired: use a start "
                f"below {self.layers_run}"
            )
        if self.config.spec.rewired and window is not None and window[1] > self.n_layers:  # past the exit layer: cut
            raise EncoderValueError(
                f"encoder.window {list(window)} stops after the last layer of this {self.n_layers}-"
                f"layer model: use a stop of at most {self.n_layers}"
            )
        self.bos_id = self._fixed_first_token()
        self.eos_id = self.tokenizer.eos_token_id if self.config.append_eos else None
        if self.config.append_eos and self.eos_id is None:
            raise EncoderValueError("encoder.append_eos is set but this tokenizer has no EOS token")
        self.placeholder = self._mean_token_embedding()
        needs_sentences = self.config.spec.blocks == "segmented" and self.config.block_mode != "tokens"
        self.segmenter = Segmenter(self.config.spacy_model) if needs_sentences else None
        self.prompts = {
            "query": self._ids(self.config.query_prompt or ""),
            "document": self._ids(self.config.document_prompt or ""),
        }
        self.glues = self.config.separate_prompt and self._glues_words()
        self.stats = EncodeStats()
        self._prefixes: dict[tuple[int, ...], Cache] = {}

    @property
    def dtype(self) -> str:
        """The dtype the model computes in ("float32", "bfloat16", ...); vectors come out float32 whatever it is."""
        return dtype_name(next(self.model.parameters()).dtype)

    @property
    def dimension(self) -> int:
        """Length of the output vectors."""
        return int(self.embed.weight.shape[1])

    def layers_to_run(self, exit_layer: int) -> int:
        """Exit layer as a hidden-state index (1..n, or negative like Python: -1 = last) -> layers to run."""
        count = exit_layer if exit_layer > 0 else self.n_layers + 1 + exit_layer
        if not 1 <= count <= self.n_layers:
            raise EncoderValueError(
                f"exit layer {exit_layer} is outside this {self.n_layers}-layer model (use 1..{self.n_layers} or "
                f"-1..-{self.n_layers})"
            )
        return count

    def _fixed_first_token(self) -> int:
        """The attention-sink token kept at position 0: BOS, else EOS, else id 0."""
        for candidate in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    @torch.inference_mode()
    def _mean_token_embedding(self) -> torch.Tensor:
        """Placeholder initialisation: the mean of all token embeddings (as the embedding layer outputs them)."""
        total = None
        vocab = self.embed.weight.shape[0]
        for start in range(0, vocab, 8192):
            ids = torch.arange(start, min(start + 8192, vocab), device=self.device)
            chunk = self.embed(ids).float().sum(dim=0)
            total = chunk if total is None else total + chunk
        return (total / vocab).to(self.embed.weight.dtype)

    def _glues_words(self) -> bool:
        """Whether a text tokenised on its own starts without a word boundary, so that after a prompt ("Text:")
        it reads glued to it ("Text:how"): byte-level BPE and Gemma's tokenizer do, SentencePiece with a dummy
        prefix (Llama 2, Mistral) marks the first word itself."""
        first = self.tokenizer.convert_ids_to_tokens(self._ids("hello"))[0]
        return not first.startswith(("\u2581", "\u0120"))  # SentencePiece's and byte-level BPE's word-start marks

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def layouts(self, texts: Sequence[str], kind: str = "document") -> list[Layout]:
        """Token layouts of texts: segmentation and blocks (for HTP), prompt, placeholders, truncation."""
        if kind not in KINDS:
            raise EncoderValueError(f"kind must be one of {KINDS}, got {kind!r}")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise EncoderTypeError(f"text {index} is {type(text).__name__}, not str")
            if not text.strip():
                raise EncoderValueError(f"text {index} is empty or whitespace-only: there is nothing to embed")
        # split_special_tokens: a text that contains "<|endoftext|>" or "</s>" is encoded as those characters, never
        # as the model's special tokens, so documents cannot end, restart or forge structure inside a sequence.
        # After a prompt, a text is tokenised with a leading space where the tokenizer would glue the two (as the
        # official template, which joins them with one); its offsets are shifted back onto the text itself.
        spaced = [bool(self.prompts[kind]) and self.glues and not text[:1].isspace() for text in texts]
        encoded = self.tokenizer(
            [" " + text if space else text for text, space in zip(texts, spaced)],
            add_special_tokens=False,
            return_offsets_mapping=True,
            split_special_tokens=True,
        )
        starts = self.segmenter.sentence_starts(texts) if self.segmenter else [[0]] * len(texts)
        cfg = self.config
        out = []
        for text, space, ids, offsets, sentence_starts in zip(
            texts, spaced, encoded["input_ids"], encoded["offset_mapping"], starts
        ):
            if space:
                offsets = [(max(a - 1, 0), max(b - 1, 0)) for a, b in offsets]
            blocks = make_blocks(
                text,
                offsets,
                sentence_starts,
                cfg.block_mode,
                cfg.sentences_per_block,
                cfg.block_tokens,
                cfg.max_blocks,
            )
            out.append(
                build_layout(cfg.spec, ids, blocks, self.bos_id, self.prompts[kind], cfg.max_length, self.eos_id)
            )
        return out

    def same_input(self, first: Sequence[str], second: Sequence[str], kind: str = "document") -> list[bool]:
        """Whether each pair of texts gives the model the same sequence, so one's vector is the other's: an edit
        past a document's truncation point changes nothing the encoder reads."""
        return [
            replace(a, truncated=False) == replace(b, truncated=False)
            for a, b in zip(self.layouts(first, kind), self.layouts(second, kind), strict=True)
        ]

    def windows(self, texts: Sequence[str], size: int) -> list[list[str]]:
        """Each text cut into consecutive windows of whole sentences of at most `size` tokens (a longer sentence
        is a window of its own and is truncated when encoded), for multi-vector indexes of long documents."""
        segmenter = self.segmenter or Segmenter(self.config.spacy_model)
        out = []
        for text, starts in zip(texts, segmenter.sentence_starts(texts)):
            bounds = [*starts, len(text)]
            pieces = [text[a:b] for a, b in zip(bounds, bounds[1:]) if text[a:b].strip()]
            counts = (
                [
                    len(ids)
                    for ids in self.tokenizer(pieces, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                ]
                if pieces
                else []
            )
            windows, current, used = [], "", 0
            for piece, count in zip(pieces, counts):
                if current and used + count > size:
                    windows.append(current.strip())
                    current, used = "", 0
                current, used = current + piece, used + count
            if current.strip():
                windows.append(current.strip())
            out.append(windows or [text])
        return out

    def encode(
        self,
        texts: str | Sequence[str],
        kind: str | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        precision: str = "float32",
        output_value: str | None = "sentence_embedding",
        device: str | None = None,
        truncate_dim: int | None = None,
    ) -> Any:
        """Embed texts as [n, dimension] float32, L2-normalised, in input order; `kind` "document" (default) or
        "query" (the query prompt).

        The keyword arguments are sentence-transformers' `encode` ones with the same meaning: `prompt_name`
        ("query" or "document") is `kind` by its name there; a single string gives a 1-D result;
        `convert_to_tensor`, `convert_to_numpy` and `precision` (float32, int8, uint8, binary, ubinary) shape
        the output; vectors are always unit length, so `normalize_embeddings` changes nothing (as for a
        sentence-transformers model ending in Normalize). What cannot apply is refused: a free `prompt` (HTP's
        prompts are vector settings of an index), another `device` than the loaded model's, `truncate_dim`,
        an `output_value` other than sentence embeddings."""
        if prompt is not None:
            raise EncoderValueError(
                "prompt= is not taken: the query and document prompts are vector settings "
                "(encoder.query_prompt, encoder.document_prompt); pass prompt_name instead"
            )
        if device is not None and not _same_device(torch.device(device), self.device):
            raise EncoderValueError(f"the model is loaded on {self.device}; choose the device in EncoderConfig")
        if precision not in PRECISIONS:  # before the forward pass, not after it
            raise EncoderValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if truncate_dim is not None:
            raise EncoderValueError("truncate_dim is not taken: HTP vectors are not trained to be cut short")
        if output_value != "sentence_embedding":
            raise EncoderValueError(f"output_value {output_value!r} is not offered: only sentence_embedding")
        if prompt_name is not None and kind is not None and prompt_name != kind:
            raise EncoderValueError(f"kind {kind!r} and prompt_name {prompt_name!r} disagree; give one of them")
        chosen = prompt_name or kind or "document"
        single = isinstance(texts, str)
        progress = show_progress if show_progress_bar is None else show_progress_bar
        batch = text_list(texts)
        vectors = self.encode_layers(batch, [self.exit_layer], chosen, batch_size, progress)[0]
        return converted(quantised(vectors, precision), single, convert_to_tensor, convert_to_numpy)

    def encode_query(self, sentences: str | Sequence[str], **options: Any) -> Any:
        """`encode` with the query prompt (sentence-transformers' encode_query)."""
        return self.encode(sentences, prompt_name="query", **options)

    def encode_document(self, sentences: str | Sequence[str], **options: Any) -> Any:
        """`encode` as a document (sentence-transformers' encode_document)."""
        return self.encode(sentences, prompt_name="document", **options)

    def get_sentence_embedding_dimension(self) -> int:
        """The vectors' dimension (the decoder's hidden size)."""
        return self.dimension

    def encode_layers(
        self,
        texts: Sequence[str],
        exit_layers: Sequence[int],
        kind: str = "document",
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embeddings at several exit layers from one forward pass each batch: [len(exit_layers), n, d].

        The rewiring window is the configured one whichever exit is read, so each slice equals what
        `encode` gives with that exit layer (used by the layer sweep).
        """
        counts = [self.layers_to_run(layer) for layer in exit_layers]
        out = np.zeros((len(counts), len(texts), self.dimension), dtype=np.float32)
        if not texts:  # nothing to embed: an empty [layers, 0, d] result, as sentence-transformers gives
            return out
        layouts = self.layouts(texts, kind)
        lengths = [len(layout.ids) for layout in layouts]
        batches = token_budget_batches(
            lengths, self.config.batch_tokens, batch_size or self.config.max_batch_size, self.config.max_padding
        )
        show = len(batches) > 1 if show_progress is None else show_progress
        desc = "encode queries" if kind == "query" else "encode documents"
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not show) as bar:
            for batch in batches:
                began = time.perf_counter()
                vectors = self.forward([layouts[i] for i in batch], counts, urgent=kind == "query")
                out[:, batch] = vectors.cpu().numpy()
                self.stats.seconds += time.perf_counter() - began
                bar.update(len(batch))
        self.stats.texts += len(texts)
        self.stats.truncated += sum(layout.truncated for layout in layouts)
        return out

    def _cached_head(self, layouts: Sequence[Layout]) -> int:
        """How many leading positions (BOS + prompt, shared by every row) come from the prefix cache: all of the
        head when caching is on, the model is causal and the head is more than BOS, else none."""
        head = layouts[0].head
        if not (self.config.prefix_cache and self.causal and head > 1):
            return 0
        first = layouts[0].ids[:head]
        return head if all(layout.head == head and layout.ids[:head] == first for layout in layouts) else 0

    def _prefix(self, head: tuple[int, ...], rows: int) -> Cache:
        """Keys and values of every layer for the head tokens, computed once per head and copied out per batch.

        Under the causal mask the head sees nothing after it and no copy writes into it, so its keys and values
        are the same in every sequence that starts with it (the query instruction, for instance)."""
        if head not in self._prefixes:
            ids = torch.tensor([head], device=self.device)
            self._prefixes[head] = self.base(input_ids=ids, use_cache=True).cache
        cache = copy.deepcopy(self._prefixes[head])
        cache.batch_repeat_interleave(rows)
        return cache

    @torch.inference_mode()
    def forward(self, layouts: Sequence[Layout], counts: Sequence[int], urgent: bool = False) -> torch.Tensor:
        """One padded batch of `layouts` (from `layouts()`) through the decoder with rewiring: pooled vectors after
        each of `counts` layers, [len(counts), rows, d] (public so benchmarks can time the pass alone). An `urgent`
        pass (queries) takes the model before other threads' waiting passes over the same model."""
        rows, width = len(layouts), max(len(layout.ids) for layout in layouts)
        ids = torch.zeros((rows, width), dtype=torch.long)
        weights = torch.zeros((rows, width))
        is_placeholder = torch.zeros((rows, width), dtype=torch.bool)
        for r, layout in enumerate(layouts):
            row = torch.tensor(layout.ids)
            is_placeholder[r, : len(row)] = row == PLACEHOLDER
            ids[r, : len(row)] = row.clamp_min(0)
            weights[r, layout.pooled] = 1.0
        cached = self._cached_head(layouts)
        ids, weights, is_placeholder = ids[:, cached:], weights[:, cached:], is_placeholder[:, cached:]
        self.stats.text_tokens += int(weights.sum())
        self.stats.sequence_tokens += sum(len(layout.ids) for layout in layouts)
        self.stats.computed_positions += rows * (width - cached)
        ids, weights, is_placeholder = ids.to(self.device), weights.to(self.device), is_placeholder.to(self.device)
        embeds = self.embed(ids)
        embeds[is_placeholder] = self.placeholder
        copies = self._copies(layouts, cached) if self.config.spec.rewired else None
        last = torch.tensor([layout.last - cached for layout in layouts], device=self.device)
        pooled: dict[int, torch.Tensor] = {}

        def reader(count: int):
            return lambda hidden: pooled.__setitem__(count, self._read_out(hidden, weights, last))

        taps = {count - 1: reader(count) for count in set(counts)}
        # Right padding and no attention mask: under the causal mask a real token never sees the padding
        # after it, so results equal unpadded ones and SDPA can take its fast causal path. A bidirectional
        # model would attend to the padding, so it gets a mask that hides it.
        mask = None
        if not self.causal:
            lengths = torch.tensor([len(layout.ids) for layout in layouts], device=self.device)
            mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).long()
        # The hooks live on the shared layer modules, so two encoders over one model object (in two threads) take
        # turns: each forward pass sees only its own copies and exit. Query passes go first (htp.turns).
        with _model_turns(self.model).turn(urgent):
            past = self._prefix(tuple(layouts[0].ids[:cached]), rows) if cached else None
            with rewired(self.layers, self.config.window, copies, max(counts), taps):
                try:
                    self.base(inputs_embeds=embeds, attention_mask=mask, cache=past, use_cache=past is not None)
                except EarlyExit:
                    pass
        return torch.stack([pooled[count] for count in counts])

    def _read_out(self, hidden: torch.Tensor, weights: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        if hidden.dim() != 3:
            raise EncoderValueError(
                f"{type(self.model).__name__} gives hidden states of shape {tuple(hidden.shape)}, "
                "not [batch, sequence, hidden] (e.g. Gemma 3n's per-layer streams); HTP cannot "
                "read this model"
            )
        if self.config.final_norm:
            hidden = self.base.norm(hidden)
        if self.config.spec.pooling == "last":
            return normalise(last_pool(hidden, last))
        return normalise(mean_pool(hidden.float(), weights))

    def _copies(self, layouts: Sequence[Layout], offset: int = 0) -> Copies:
        """Flatten every row's PST/end/B-PST positions into index tensors for one vectorised copy; positions are
        counted from `offset` (the cached head is not in the hidden states)."""
        rows, pst, ends, b_rows, bpst, b_src = [], [], [], [], [], []
        for r, layout in enumerate(layouts):
            rows += [r] * len(layout.pst)
            pst += layout.pst
            ends += layout.ends
            b_rows += [r] * len(layout.bpst)
            bpst += layout.bpst
            b_src += layout.pst[: len(layout.bpst)]

        def tensor(values: list[int], shift: int = 0) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=self.device) - shift

        return Copies(
            tensor(rows),
            tensor(pst, offset),
            tensor(ends, offset),
            tensor(b_rows),
            tensor(bpst, offset),
            tensor(b_src, offset),
        )


def text_list(texts: object) -> list[str]:
    """The texts `encode` takes as a list: one string, or a list, tuple or other iterable of strings; anything else
    (a dict, bytes, None, a number) is refused naming what was given."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, Mapping | bytes | bytearray) or not isinstance(texts, Iterable):
        hint = " (decode it to str first)" if isinstance(texts, bytes | bytearray) else ""
        raise EncoderTypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}{hint}")
    return list(texts)


def _same_device(asked: torch.device, loaded: torch.device) -> bool:
    """ "cuda" names whichever CUDA device the model is on; "cuda:1" only that one."""
    return asked.type == loaded.type and (asked.index is None or asked.index == (loaded.index or 0))
