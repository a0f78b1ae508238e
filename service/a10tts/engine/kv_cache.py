"""Slot-based KV cache for continuous batching, and the attention that reads it.

Storage is allocated once: per layer, keys and values of shape
``[num_slots, capacity, num_kv_heads, head_dim]``. Each running request owns one slot for its
whole life, so admitting or finishing a request never moves memory, and freeing a slot is O(1).
The token-major layout inside a slot is what flash-attention's ``flash_attn_with_kvcache``
(with ``cache_batch_idx``) and a Triton decode kernel read in place.

A forward pass carries packed tokens ``[num_tokens, ...]``; ``KVCache.reserve`` returns the
``CacheBatch`` that tells every token its slot and position. Prefill (many tokens per slot) and
decode (one token per slot) are the same operation: a query at position ``p`` of a slot attends
to positions ``0..p`` of that slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from a10tts.engine.kernels.decode_attention import decode_attention


@dataclass(frozen=True)
class CacheBatch:
    """Where the tokens of one forward pass go in the cache, and what each of them may see.

    ``B`` rows (one per slot) hold ``N`` packed tokens; queries are laid out on a padded
    ``[B, max_query_len]`` grid for attention.
    """

    slots: Tensor  # [B] slot of each row
    token_slots: Tensor  # [N] slot of each token
    token_positions: Tensor  # [N] position of each token in its slot (its RoPE position too)
    token_rows: Tensor  # [N] index of each token in the flattened [B * max_query_len] grid
    last_token_index: Tensor  # [B] index among the N tokens of each row's final token
    visible: Tensor  # [B, 1, max_query_len, kv_len] bool: may query t of row b see key j
    max_query_len: int

    @classmethod
    def build(
        cls,
        slots: Sequence[int],
        starts: Sequence[int],
        counts: Sequence[int],
        device: torch.device,
    ) -> CacheBatch:
        """Row ``b`` appends ``counts[b]`` tokens to slot ``slots[b]``, holding ``starts[b]``."""
        counts_t = torch.tensor(counts, dtype=torch.long)
        starts_t = torch.tensor(starts, dtype=torch.long)
        num_rows, max_query_len = len(counts), max(counts)
        kv_len = int((starts_t + counts_t).max())

        row_of_token = torch.repeat_interleave(torch.arange(num_rows), counts_t)
        first_token = torch.cumsum(counts_t, 0) - counts_t
        offset_in_row = torch.arange(int(counts_t.sum())) - first_token[row_of_token]
        query_positions = starts_t[:, None] + torch.arange(max_query_len)[None, :]
        visible = torch.arange(kv_len)[None, None, :] <= query_positions[:, :, None]

        slots_t = torch.tensor(slots, dtype=torch.long)
        fields = dict(
            slots=slots_t,
            token_slots=slots_t[row_of_token],
            token_positions=starts_t[row_of_token] + offset_in_row,
            token_rows=row_of_token * max_query_len + offset_in_row,
            last_token_index=first_token + counts_t - 1,
            visible=visible[:, None],
        )
        return cls(
            **{k: v.to(device, non_blocking=True) for k, v in fields.items()},
            max_query_len=max_query_len,
        )


@dataclass(frozen=True)
class DecodeBatch:
    """One new token per slot: everything on the device, nothing that needs a host sync, so a
    decode step built on it can be captured in a CUDA graph and replayed with new values."""

    slots: Tensor  # [B] slot of each row (the scratch slot for padding rows)
    positions: Tensor  # [B] position of the new token, i.e. the slot's length before it

    @property
    def token_slots(self) -> Tensor:
        return self.slots

    @property
    def token_positions(self) -> Tensor:
        return self.positions


class KVCache:
    """Preallocated keys/values for ``num_slots`` requests of up to ``capacity`` tokens each."""

    def __init__(
        self,
        *,
        num_layers: int,
        num_slots: int,
        capacity: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        # One extra slot that no request owns: padding rows of a fixed-size (CUDA graph)
        # decode batch write and read there, so they never touch a live request's cache.
        shape = (num_layers, num_slots + 1, capacity, num_kv_heads, head_dim)
        # Zeros rather than empty: padded query rows of a ragged prefill may read positions no
        # request wrote; their output is discarded but must stay finite.
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.capacity = capacity
        self._lengths = [0] * num_slots
        self._in_use = [False] * num_slots
        self._free = list(reversed(range(num_slots)))  # pop() hands out slot 0 first

    @property
    def device(self) -> torch.device:
        return self.keys.device

    @property
    def num_slots(self) -> int:
        return len(self._lengths)

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def scratch_slot(self) -> int:
        return self.num_slots

    def layer(self, index: int) -> tuple[Tensor, Tensor]:
        return self.keys[index], self.values[index]

    def length(self, slot: int) -> int:
        """Number of valid positions in ``slot``."""
        return self._lengths[slot]

    def allocate(self) -> int:
        if not self._free:
            raise RuntimeError(f"KV cache is full: all {self.num_slots} slots are in use")
        slot = self._free.pop()
        self._in_use[slot] = True
        self._lengths[slot] = 0
        return slot

    def free(self, slot: int) -> None:
        """Give ``slot`` back; its stale contents are masked out by length, never cleared."""
        if not self._in_use[slot]:
            raise ValueError(f"slot {slot} is not allocated")
        self._in_use[slot] = False
        self._free.append(slot)

    def reserve(self, slots: Sequence[int], num_new_tokens: Sequence[int]) -> CacheBatch:
        """Claim the next ``num_new_tokens[b]`` positions of each slot for one forward pass."""
        starts = self.advance(slots, num_new_tokens)
        return CacheBatch.build(slots, starts, num_new_tokens, self.device)

    def reserve_decode(self, slots: Sequence[int]) -> DecodeBatch:
        """Claim one position in each slot: a decode step."""
        starts = self.advance(slots, [1] * len(slots))
        return DecodeBatch(
            slots=torch.tensor(slots, dtype=torch.long).to(self.device, non_blocking=True),
            positions=torch.tensor(starts, dtype=torch.long).to(self.device, non_blocking=True),
        )

    def advance(self, slots: Sequence[int], num_new_tokens: Sequence[int]) -> list[int]:
        """Validate a pass and move each slot's length on; returns the lengths before it."""
        if len(slots) != len(num_new_tokens) or not slots:
            raise ValueError("reserve needs one token count per slot and at least one slot")
        if len(set(slots)) != len(slots):
            raise ValueError(f"a slot appears twice in one batch: {list(slots)}")
        starts = []
        for slot, count in zip(slots, num_new_tokens):
            if not self._in_use[slot]:
                raise ValueError(f"slot {slot} is not allocated")
            if count < 1:
                raise ValueError(f"slot {slot}: a row needs at least one new token, got {count}")
            if self._lengths[slot] + count > self.capacity:
                raise ValueError(
                    f"slot {slot}: {self._lengths[slot]} + {count} tokens exceed the "
                    f"capacity of {self.capacity} per request"
                )
            starts.append(self._lengths[slot])
        for slot, count in zip(slots, num_new_tokens):
            self._lengths[slot] += count
        return starts


def write_kv(keys: Tensor, values: Tensor, batch: CacheBatch | DecodeBatch, k: Tensor, v: Tensor) -> None:
    """Store this pass's ``k``/``v`` ``[N, num_kv_heads, head_dim]`` into one layer's cache."""
    keys[batch.token_slots, batch.token_positions] = k
    values[batch.token_slots, batch.token_positions] = v


def cached_attention(
    q: Tensor, keys: Tensor, values: Tensor, batch: CacheBatch | DecodeBatch, scale: float
) -> Tensor:
    """Attention of packed queries ``[N, num_heads, head_dim]`` over their slots' cached prefix.

    Returns ``[N, num_heads * head_dim]``. Decode steps go to the slot-aware decode kernel
    (Triton on CUDA); prefills use torch SDPA over a padded query grid.
    """
    if isinstance(batch, DecodeBatch):
        out = decode_attention(q, keys, values, batch.slots, batch.positions + 1, scale)
        return out.reshape(q.shape[0], -1)
    _, num_heads, head_dim = q.shape
    num_rows, query_len, kv_len = len(batch.slots), batch.max_query_len, batch.visible.shape[-1]
    num_kv_heads = keys.shape[2]
    group = num_heads // num_kv_heads

    grid = q.new_zeros(num_rows * query_len, num_heads, head_dim)
    grid.index_copy_(0, batch.token_rows, q)
    # GQA without copying K/V: the query heads sharing a KV head are folded into the query
    # axis, [B, kv_heads, group * query_len, head_dim] (head h uses KV head h // group).
    grid = grid.view(num_rows, query_len, num_kv_heads, group, head_dim)
    grid = grid.permute(0, 2, 3, 1, 4).reshape(num_rows, num_kv_heads, group * query_len, head_dim)
    k = keys[batch.slots, :kv_len].transpose(1, 2)
    v = values[batch.slots, :kv_len].transpose(1, 2)
    mask = batch.visible.unsqueeze(2).expand(num_rows, 1, group, query_len, kv_len)
    mask = mask.reshape(num_rows, 1, group * query_len, kv_len)

    out = F.scaled_dot_product_attention(grid, k, v, attn_mask=mask, scale=scale)
    out = out.view(num_rows, num_kv_heads, group, query_len, head_dim).permute(0, 3, 1, 2, 4)
    return out.reshape(num_rows * query_len, num_heads * head_dim).index_select(0, batch.token_rows)
