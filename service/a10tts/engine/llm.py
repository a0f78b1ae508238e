"""CosyVoice2's speech-token language model: a Qwen2 decoder with speech embeddings and head.

The LM reads ``[sos, text embeddings of prompt_text + text, task_id, speech embeddings of the
prompt's speech tokens]`` (no speaker embedding in CosyVoice2) and continues it with speech
tokens. Two layers of API:

* ``prefill`` / ``decode_step``: batch primitives over KV-cache slots for the scheduler;
* ``generate``: the reference single-request loop (``a10tts synth``, tests) built on them.

Module names mirror upstream ``Qwen2LM`` so ``llm.pt`` loads strictly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from a10tts.engine.lm_graphs import PREFILL_BUCKET_TOKENS, DecodeGraphs, PrefillGraphs
from a10tts.engine.hparams import nested_args, require
from a10tts.engine.kv_cache import CacheBatch, DecodeBatch, KVCache
from a10tts.engine.qwen2 import Qwen2Config, Qwen2ForCausalLM, Qwen2Model
from a10tts.engine.sampling import RasSampling, forbid_tokens_from, make_generator, sample_batch

# Upstream's inference defaults: the speech/text token count ratio bounds of one utterance.
MIN_TOKEN_TEXT_RATIO = 2.0
MAX_TOKEN_TEXT_RATIO = 20.0
# Speech-token ids past the codebook: eos, an unused id, and the fill token of bistream text.
NUM_SPECIAL_SPEECH_TOKENS = 3


@dataclass(frozen=True)
class TokenBudget:
    """How many speech tokens a request may produce: stop tokens are refused before
    ``min_tokens``, and generation ends after ``max_tokens`` tokens."""

    min_tokens: int
    max_tokens: int

    @classmethod
    def for_text(
        cls,
        num_text_tokens: int,
        min_ratio: float = MIN_TOKEN_TEXT_RATIO,
        max_ratio: float = MAX_TOKEN_TEXT_RATIO,
    ) -> TokenBudget:
        """Bounds from the length of the text to speak (the prompt text does not count)."""
        return cls(int(num_text_tokens * min_ratio), int(num_text_tokens * max_ratio))

    @classmethod
    def exactly(cls, num_tokens: int) -> TokenBudget:
        """Ignore stop tokens until ``num_tokens``, then stop: fixed-length runs for benchmarks."""
        return cls(num_tokens, num_tokens)

    def stop_allowed(self, num_generated: int) -> bool:
        return num_generated >= self.min_tokens


class Qwen2Encoder(nn.Module):
    """Upstream's holder of the causal LM; kept so checkpoint keys read ``llm.model.*``."""

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.model = Qwen2ForCausalLM(config)


class CosyVoice2LM(nn.Module):
    """Speech-token LM: ids ``< speech_token_size`` are speech tokens, all others stop."""

    def __init__(
        self,
        qwen_config: Qwen2Config,
        *,
        llm_input_size: int,
        llm_output_size: int,
        speech_token_size: int,
        sampling: RasSampling | None = None,
    ) -> None:
        super().__init__()
        sizes = {"llm_input_size": llm_input_size, "llm_output_size": llm_output_size}
        for name, size in sizes.items():
            if size != qwen_config.hidden_size:
                raise ValueError(
                    f"{name} {size} must equal the Qwen2 hidden_size {qwen_config.hidden_size}"
                )
        self.qwen_config = qwen_config
        self.speech_token_size = speech_token_size
        self.sampling = sampling or RasSampling()
        self._graphs: DecodeGraphs | None = None  # set by enable_cuda_graphs
        self._prefill_graphs: PrefillGraphs | None = None
        self.llm_embedding = nn.Embedding(2, llm_input_size)  # row 0: sos, row 1: task id
        self.llm = Qwen2Encoder(qwen_config)
        vocab = speech_token_size + NUM_SPECIAL_SPEECH_TOKENS
        self.llm_decoder = nn.Linear(llm_output_size, vocab)
        self.speech_embedding = nn.Embedding(vocab, llm_input_size)

    @classmethod
    def from_hparams(
        cls, args: Mapping[str, Any], qwen_config: Mapping[str, Any] | None = None
    ) -> CosyVoice2LM:
        """From the yaml's ``llm: !new:cosyvoice.llm.llm.Qwen2LM`` arguments.

        The Qwen2 shape comes from ``qwen_config`` if given, else from
        ``<llm.pretrain_path>/config.json``. Training-only keys are ignored.
        """
        where = "llm (Qwen2LM)"
        if qwen_config is not None:
            config = Qwen2Config.from_dict(qwen_config)
        else:
            backbone = nested_args(args, "llm", where)
            pretrain_path = require(backbone, "pretrain_path", f"{where}.llm")
            config = Qwen2Config.from_file(Path(pretrain_path) / "config.json")
        return cls(
            config,
            llm_input_size=require(args, "llm_input_size", where),
            llm_output_size=require(args, "llm_output_size", where),
            speech_token_size=require(args, "speech_token_size", where),
            sampling=RasSampling.from_hparams(
                nested_args(args, "sampling", where)
            ),
        )

    @property
    def backbone(self) -> Qwen2Model:
        return self.llm.model.model

    def is_stop_token(self, token: int) -> bool:
        return token >= self.speech_token_size

    def prompt_embeds(
        self, text: Tensor, prompt_text: Tensor, prompt_speech_tokens: Tensor
    ) -> Tensor:
        """The LM input ``[L, hidden]`` of one request, from 1-D id tensors (any may be empty)."""
        text_ids = torch.cat([prompt_text, text]).long()
        sos, task_id = self.llm_embedding.weight[:1], self.llm_embedding.weight[1:2]
        return torch.cat(
            [
                sos,
                self.backbone.embed_tokens(text_ids),
                task_id,
                self.speech_embedding(prompt_speech_tokens.long()),
            ]
        )

    def new_kv_cache(self, num_slots: int, capacity: int) -> KVCache:
        """A cache in this model's dtype and device; ``capacity`` counts prompt + speech tokens."""
        weight = self.llm_decoder.weight
        return KVCache(
            num_layers=self.qwen_config.num_hidden_layers,
            num_slots=num_slots,
            capacity=capacity,
            num_kv_heads=self.qwen_config.num_key_value_heads,
            head_dim=self.qwen_config.head_dim,
            dtype=weight.dtype,
            device=weight.device,
        )

    def prefill(
        self, cache: KVCache, slots: Sequence[int], prompt_embeds: Sequence[Tensor]
    ) -> Tensor:
        """Run new requests' prompts (ragged) into their slots; fp32 log-probs ``[B, vocab]``
        of each request's first speech token."""
        graphs = self._prefill_graphs
        buckets = graphs.buckets_for(slots, prompt_embeds) if graphs is not None and graphs.cache is cache else None
        if buckets is not None:
            return torch.cat([graphs.prefill(*args) for args in zip(buckets, slots, prompt_embeds)])
        batch = cache.reserve(slots, [len(embeds) for embeds in prompt_embeds])
        return self.prefill_logp(torch.cat(list(prompt_embeds)), batch, cache)

    def decode_step(
        self, cache: KVCache, slots: Sequence[int], last_tokens: Sequence[int] | Tensor
    ) -> Tensor:
        """Feed each slot its last speech token; fp32 log-probs ``[B, vocab]`` of the next one."""
        if self._graphs is not None and self._graphs.cache is cache:
            return self._graphs.step(slots, last_tokens)
        device = self.speech_embedding.weight.device
        tokens = torch.as_tensor(last_tokens, dtype=torch.long, device=device)
        return self.decode_logp(tokens, cache.reserve_decode(slots), cache)

    def sample(
        self, logp: Tensor, histories: Sequence[Sequence[int]], generators: Sequence[torch.Generator],
        too_short: Sequence[bool],
    ) -> list[int]:
        """One RAS-sampled token per row of ``logp``; rows ``too_short`` may not stop yet."""
        logp = forbid_tokens_from(logp, self.speech_token_size, too_short)
        return sample_batch(logp, self.sampling, histories, generators).tolist()

    def decode_and_sample(
        self, cache: KVCache, slots: Sequence[int], last_tokens: Sequence[int],
        histories: Sequence[Sequence[int]], generators: Sequence[torch.Generator], too_short: Sequence[bool],
    ) -> list[int]:
        """``decode_step`` then ``sample``: with CUDA graphs, both in one replay."""
        if self._graphs is not None and self._graphs.cache is cache:
            return self._graphs.step_and_sample(slots, last_tokens, histories, generators, too_short)
        return self.sample(self.decode_step(cache, slots, last_tokens), histories, generators, too_short)

    def enable_cuda_graphs(
        self, cache: KVCache, max_batch_size: int, compile: bool = False, max_prefill_tokens: int = 0
    ) -> None:
        """Capture decode steps over `cache` for batches up to `max_batch_size` (CUDA only);
        `compile` fuses the step with torch.compile first (slower start-up, faster steps).
        Prompts of up to `max_prefill_tokens` tokens into empty slots prefill from graphs too."""
        self._graphs = DecodeGraphs(self, cache, max_batch_size, compile=compile)
        if max_prefill_tokens >= PREFILL_BUCKET_TOKENS:
            self._prefill_graphs = PrefillGraphs(self, cache, max_prefill_tokens)

    def disable_cuda_graphs(self) -> None:
        self._graphs = self._prefill_graphs = None

    def prefill_logp(self, embeds: Tensor, batch: CacheBatch, cache: KVCache) -> Tensor:
        """The device part of a prefill: what a CUDA graph captures."""
        return self._next_token_logp(self.backbone(embeds, cache, batch)[batch.last_token_index])

    def decode_logp(self, tokens: Tensor, batch: DecodeBatch, cache: KVCache) -> Tensor:
        """The device part of a decode step (no host syncs): what a CUDA graph captures."""
        return self._next_token_logp(self.backbone(self.speech_embedding(tokens), cache, batch))

    def _next_token_logp(self, hidden: Tensor) -> Tensor:
        return self.llm_decoder(hidden).float().log_softmax(dim=-1)

    @torch.inference_mode()
    def generate(
        self,
        text: Tensor,
        prompt_text: Tensor,
        prompt_speech_tokens: Tensor,
        *,
        generator: torch.Generator | None = None,
        num_tokens: int | None = None,
    ) -> Iterator[int]:
        """Yield the speech tokens of one request (stop token excluded).

        ``num_tokens`` forces exactly that many tokens (stop tokens ignored), for benchmarks.
        """
        if num_tokens is None:
            budget = TokenBudget.for_text(len(text))
        else:
            budget = TokenBudget.exactly(num_tokens)
        generator = generator or make_generator()
        embeds = self.prompt_embeds(text, prompt_text, prompt_speech_tokens)
        cache = self.new_kv_cache(num_slots=1, capacity=len(embeds) + budget.max_tokens)
        slot = cache.allocate()
        logp = self.prefill(cache, [slot], [embeds])
        history: list[int] = []
        while len(history) < budget.max_tokens:
            # Every stop id is refused below the minimum, as upstream's vLLM path does with
            # min_tokens (its HF path masks only eos, the one id a trained model emits).
            too_short = not budget.stop_allowed(len(history))
            token = self.sample(logp, [history], [generator], [too_short])[0]
            if self.is_stop_token(token):
                return
            yield token
            history.append(token)
            if len(history) < budget.max_tokens:
                logp = self.decode_step(cache, [slot], [token])
