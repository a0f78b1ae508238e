"""CosyVoice2 flow module: speech tokens + prompt -> mel spectrogram, batched across requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a10tts.engine.cuda_graphs import EncoderGraphs, FlowGraphs
from a10tts.engine.hparams import nested_args, require
from a10tts.engine.flow.cfm import CausalConditionalCFM
from a10tts.engine.flow.encoder import UpsampleConformerEncoder
from a10tts.engine.flow.estimator import CausalConditionalDecoder
from a10tts.engine.flow.masks import lengths_to_mask
from a10tts.engine.flow.prefix import FlowPrefix


def join_prompt_and_tokens(
    prompt_token: Tensor, prompt_token_len: Tensor, token: Tensor, token_len: Tensor
) -> tuple[Tensor, Tensor]:
    """Per row, ``prompt_token[:p] ++ token[:t]`` packed to the left: ``[B, max(p+t)]`` and ``p+t``."""
    total_len = prompt_token_len + token_len
    both = torch.cat([prompt_token, token], dim=1)
    position = torch.arange(int(total_len.max()), device=both.device).unsqueeze(0)
    prompt_len = prompt_token_len.unsqueeze(1)
    source = torch.where(position < prompt_len, position, position - prompt_len + prompt_token.size(1))
    return both.gather(1, source.clamp(max=both.size(1) - 1)), total_len


def _per_row(flag: bool | Tensor, batch: int, device: torch.device) -> Tensor:
    """A batch-wide or per-request flag as a ``[B]`` bool tensor."""
    if isinstance(flag, Tensor):
        return flag.to(device=device, dtype=torch.bool).reshape(batch)
    return torch.full((batch,), bool(flag), device=device)


def _on_device(flag: bool | Tensor, device: torch.device) -> bool | Tensor:
    """Keep a plain bool (static masks); move a per-request flag tensor to ``device``."""
    return flag.to(device=device, dtype=torch.bool) if isinstance(flag, Tensor) else bool(flag)


def lookahead_tokens(args: Mapping[str, Any]) -> int:
    """Tokens past a streamed chunk that shape its last frames (the yaml's ``flow.pre_lookahead_len``)."""
    return args.get("pre_lookahead_len", 3)


class FlowModel(nn.Module):
    """Upstream ``CausalMaskedDiffWithXvec`` (inference only); same state-dict keys."""

    def __init__(
        self,
        encoder: UpsampleConformerEncoder,
        decoder: CausalConditionalCFM,
        input_size: int,
        output_size: int = 80,
        spk_embed_dim: int = 192,
        vocab_size: int = 6561,
        token_mel_ratio: int = 2,
        pre_lookahead_len: int = 3,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.token_mel_ratio = token_mel_ratio
        self.pre_lookahead_len = pre_lookahead_len
        self.input_embedding = nn.Embedding(vocab_size, input_size)
        self.spk_embed_affine_layer = nn.Linear(spk_embed_dim, output_size)
        self.encoder = encoder
        self.encoder_proj = nn.Linear(encoder.output_size, output_size)
        self.decoder = decoder
        self._graphs: FlowGraphs | None = None  # set by enable_cuda_graphs
        self._encoder_graphs: EncoderGraphs | None = None

    @classmethod
    def from_hparams(cls, args: Mapping[str, Any]) -> FlowModel:
        """Build from the args of the yaml's ``flow`` node (``CausalMaskedDiffWithXvec``)."""
        where = "flow"
        sizes = {
            key: require(args, key, where)
            for key in ("input_size", "output_size", "spk_embed_dim", "vocab_size")
        }
        token_mel_ratio = args.get("token_mel_ratio", 2)
        pre_lookahead_len = lookahead_tokens(args)
        encoder_args = nested_args(args, "encoder", where, expected_class="UpsampleConformerEncoder")
        decoder_args = nested_args(args, "decoder", where, expected_class="CausalConditionalCFM")
        return cls(
            encoder=UpsampleConformerEncoder.from_hparams(
                encoder_args, pre_lookahead_len=pre_lookahead_len, upsample_factor=token_mel_ratio
            ),
            decoder=CausalConditionalCFM.from_hparams(decoder_args),
            token_mel_ratio=token_mel_ratio,
            pre_lookahead_len=pre_lookahead_len,
            **sizes,
        )

    def enable_cuda_graphs(self, max_batch_size: int, compile: bool = False, max_frames: int = 0) -> None:
        """Replay the Euler steps and the encoder from CUDA graphs, captured per batch/frames
        bucket: now for inputs up to ``max_frames`` mel frames, on first use for longer ones."""
        self._graphs = FlowGraphs(self.decoder, max_batch_size, compile=compile)
        self._encoder_graphs = EncoderGraphs(self, max_batch_size)
        if max_frames:
            self._graphs.prepare(max_frames)
            self._encoder_graphs.prepare(max_frames // self.token_mel_ratio)

    def encode(
        self,
        token: Tensor,
        token_len: Tensor,
        prompt_token: Tensor,
        prompt_token_len: Tensor,
        streaming: bool | Tensor = False,
        finalize: bool | Tensor = True,
    ) -> tuple[Tensor, Tensor]:
        """Encoder output ``[B, T, D]`` at mel-frame rate and its lengths ``[B]``.

        Each row encodes ``prompt ++ tokens``. Where ``finalize`` is False, the row's last
        ``pre_lookahead_len`` tokens are look-ahead context only: they shape the frames before
        them but produce none.
        """
        device = self.input_embedding.weight.device
        tokens, total_len = join_prompt_and_tokens(
            prompt_token.to(device), prompt_token_len.to(device), token.to(device), token_len.to(device)
        )
        finalize = _per_row(finalize, tokens.size(0), device)
        output_len = total_len - self.pre_lookahead_len * (~finalize).long()
        if self._encoder_graphs is not None:
            return self._encoder_graphs(tokens, total_len, output_len, _per_row(streaming, tokens.size(0), device))
        return self.encode_tokens(tokens, total_len, output_len, _on_device(streaming, device))

    def encode_tokens(self, tokens: Tensor, input_len: Tensor, output_len: Tensor, streaming: bool | Tensor,
                      keep_all: bool = False) -> tuple[Tensor, Tensor]:
        """The encoder on joined prompt and request tokens ``[B, N]`` (``UpsampleConformerEncoder``)."""
        x = self.input_embedding(tokens.clamp(min=0).long())
        return self.encoder(x, input_len, output_len, streaming, keep_all)

    @property
    def continues_prefixes(self) -> bool:
        """Whether ``inference`` can continue ``prompt_prefix``es: the estimator runs in torch,
        eagerly or from CUDA graphs (a TensorRT engine is built for whole inputs)."""
        return isinstance(self.decoder.estimator, CausalConditionalDecoder)

    def prefix_tokens(self, prompt_tokens: int) -> int:
        """How many of a prompt's tokens no request token can reach in streaming mode: whole
        attention chunks ending at least the pre-look-ahead before the prompt does."""
        chunk = self.encoder.static_chunk_size
        if chunk <= 0 or getattr(self.decoder.estimator, "static_chunk_size", None) != chunk * self.token_mel_ratio:
            return 0  # chunk layouts other than CosyVoice2's: no prefix is known to be safe
        return (prompt_tokens - self.pre_lookahead_len) // chunk * chunk

    @torch.inference_mode()
    def prompt_prefix(
        self, prompt_token: Tensor, prompt_feat: Tensor, embedding: Tensor, n_timesteps: int = 10
    ) -> FlowPrefix | None:
        """The streamed flow's work on one voice's prompt that every streamed chunk of every
        request in that voice repeats (prompt_token ``[P]``, prompt_feat ``[Fp, output_size]``,
        embedding ``[spk_embed_dim]``), or None if the prompt is too short to hold any."""
        device = self.input_embedding.weight.device
        frames = self.prefix_tokens(len(prompt_token)) * self.token_mel_ratio
        if frames <= 0 or frames > prompt_feat.size(0):
            return None
        no_tokens = torch.zeros(1, 0, dtype=torch.long, device=device)
        mu, valid, _, spks = self._conditioning(
            no_tokens, torch.zeros(1, dtype=torch.long, device=device), prompt_token[None].to(device),
            torch.tensor([len(prompt_token)], device=device), embedding[None], True, False,
        )
        cond = prompt_feat[None, :frames].to(device=device, dtype=mu.dtype).transpose(1, 2)
        return self.decoder.record_prefix(mu[:, :, :frames], valid[:, :, :frames], spks, cond, n_timesteps)

    def _conditioning(
        self, token: Tensor, token_len: Tensor, prompt_token: Tensor, prompt_token_len: Tensor, embedding: Tensor,
        streaming: bool | Tensor, finalize: bool | Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The estimator's mu ``[B, output_size, T]`` (zero past each row's frames), the valid
        frames ``[B, 1, T]``, their number ``[B]`` and the speaker vectors ``[B, output_size]``."""
        dtype = self.encoder_proj.weight.dtype
        unit_embedding = F.normalize(embedding.to(self.input_embedding.weight.device).float(), dim=1)
        spks = self.spk_embed_affine_layer(unit_embedding.to(dtype))
        hidden, frames_len = self.encode(token, token_len, prompt_token, prompt_token_len, streaming, finalize)
        valid = lengths_to_mask(frames_len, hidden.size(1)).unsqueeze(1).to(dtype)  # [B, 1, T]
        return self.encoder_proj(hidden).transpose(1, 2) * valid, valid, frames_len, spks

    @torch.inference_mode()
    def inference(
        self,
        token: Tensor,
        token_len: Tensor,
        prompt_token: Tensor,
        prompt_token_len: Tensor,
        prompt_feat: Tensor,
        prompt_feat_len: Tensor,
        embedding: Tensor,
        streaming: bool | Tensor = False,
        finalize: bool | Tensor = True,
        n_timesteps: int = 10,
        prefix: FlowPrefix | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Mel for a padded batch of requests: ``mel [B, output_size, F]`` (fp32) and ``mel_len [B]``.

        token ``[B, N]``/token_len; prompt_token ``[B, P]``/prompt_token_len; prompt_feat
        ``[B, Fp, output_size]``/prompt_feat_len (the prompt mel, normally 2 frames per prompt
        token); embedding ``[B, spk_embed_dim]``. ``streaming`` (chunked attention) and
        ``finalize`` are one flag for the batch or a ``[B]`` bool tensor. The prompt frames are
        dropped: row b holds ``mel_len[b]`` new frames, zero-padded after them.

        ``prefix``: the ``prompt_prefix`` of every row's voice (streaming rows of one voice only,
        ``continues_prefixes``): the estimator then runs only on the frames after it, with the same
        result.
        """
        device = self.input_embedding.weight.device
        dtype = self.encoder_proj.weight.dtype
        streaming = _on_device(streaming, device)
        mu, valid, frames_len, spks = self._conditioning(
            token, token_len, prompt_token, prompt_token_len, embedding, streaming, finalize
        )
        prompt_frames = prompt_feat_len.to(device)
        cond = self._prompt_condition(prompt_feat.to(device), prompt_frames, mu.size(2), dtype)
        if prefix is not None:
            done = prefix.frames
            if bool((prompt_frames < done).any()):
                raise ValueError("a flow prefix is longer than a row's prompt: it belongs to another voice")
            new_len = frames_len - done
            mask = lengths_to_mask(new_len, mu.size(2) - done).unsqueeze(1).to(dtype)
            mel = self._solver.continue_prefix(prefix, mu[:, :, done:], mask, spks, cond[:, :, done:], n_timesteps)
            return self._drop_leading(mel, prompt_frames - done, new_len)
        mel = self._solver(mu, valid, spks, cond, streaming, n_timesteps)
        return self._drop_leading(mel, prompt_frames, frames_len)

    @property
    def _solver(self) -> FlowGraphs | CausalConditionalCFM:
        """The Euler loop: replayed from CUDA graphs once they are enabled, else eager."""
        return self._graphs if self._graphs is not None else self.decoder

    def _prompt_condition(
        self, prompt_feat: Tensor, prompt_feat_len: Tensor, frames: int, dtype: torch.dtype
    ) -> Tensor:
        """``[B, C, frames]`` zeros with each row's prompt mel in its first frames."""
        batch = prompt_feat.size(0)
        cond = torch.zeros(batch, frames, self.output_size, device=prompt_feat.device, dtype=dtype)
        used = min(prompt_feat.size(1), frames)
        in_prompt = lengths_to_mask(prompt_feat_len, used).unsqueeze(-1)
        cond[:, :used] = torch.where(in_prompt, prompt_feat[:, :used].to(dtype), 0.0)
        return cond.transpose(1, 2)

    @staticmethod
    def _drop_leading(x: Tensor, leading: Tensor, frames_len: Tensor) -> tuple[Tensor, Tensor]:
        """Shift each row of ``x`` ``[B, C, T]`` left by its ``leading`` frames (the prompt's, less
        a prefix's): ``[B, C, max(kept)]`` and the frames kept, ``frames_len - leading``; zero after them."""
        kept = (frames_len - leading).clamp(min=0)
        position = torch.arange(int(kept.max()), device=x.device).unsqueeze(0)
        source = (position + leading.unsqueeze(1)).clamp(max=x.size(2) - 1)
        shifted = x.gather(2, source.unsqueeze(1).expand(-1, x.size(1), -1))
        return shifted * (position < kept.unsqueeze(1)).unsqueeze(1), kept
