"""Harmonic-plus-noise excitation of the HiFT vocoder (neural source filter, 24 kHz variant).

Turns a frame-rate f0 contour into a sample-rate excitation signal: a stack of sine harmonics whose
phase is integrated at frame rate and linearly interpolated to sample rate, plus Gaussian noise,
merged into one channel by a learned linear layer and a tanh.

The random draws reproduce upstream's exactly (same calls, shapes, memory layouts and order), so a
seeded run gives the same audio as the reference implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GeneratorArg = torch.Generator | Sequence[torch.Generator | None] | None


class HarmonicNoiseSource(nn.Module):
    """Upstream `SourceModuleHnNSF` with the `SineGen2` sine generator (key prefix `m_source.`)."""

    def __init__(
        self,
        sampling_rate: int,
        samples_per_frame: int,
        num_harmonics: int,
        sine_amp: float,
        noise_std: float,
        voiced_threshold: float,
    ) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.samples_per_frame = samples_per_frame
        self.num_sines = num_harmonics + 1  # fundamental + overtones
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.l_linear = nn.Linear(self.num_sines, 1)

    def forward(
        self,
        f0: torch.Tensor,
        frame_lengths: torch.Tensor | None = None,
        generator: GeneratorArg = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 [B, T] (Hz, frame rate) -> (excitation [B, 1, T*hop], voiced flags [B, 1, T*hop]).

        `generator` is one torch.Generator shared by all rows, one per row, or None for the global
        RNG. Each row draws exactly what a batch-of-one call would draw, in row order, so a row's
        excitation does not depend on its batch neighbours when each row has its own generator.
        Samples past a row's length are zero.
        """
        f0 = f0.float()  # phase accumulation needs fp32 whatever the module dtype
        batch, frames = f0.shape
        hop = self.samples_per_frame
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames, dtype=torch.long)
        lengths = [int(n) * hop for n in frame_lengths.tolist()]

        # Upstream integrates the per-sample phase increment at frame rate; as f0 is constant
        # inside a frame, this equals the increment of the frame itself.
        harmonics = torch.arange(1, self.num_sines + 1, dtype=f0.dtype, device=f0.device)
        phase_step = (f0.unsqueeze(-1) * harmonics / self.sampling_rate) % 1  # [B, T, S]
        phase = torch.cumsum(phase_step, dim=1) * 2 * math.pi
        phase = _hold_last_frame(phase, frame_lengths.to(f0.device))
        # Linear interpolation of the (hop-scaled) frame phase to sample rate, channel-first as
        # upstream lays it out: [B, S, L] viewed as [B, L, S].
        phase = F.interpolate(phase.transpose(1, 2) * hop, scale_factor=hop, mode="linear")
        sines = torch.sin(phase).transpose(1, 2) * self.sine_amp

        voiced = (f0 > self.voiced_threshold).float().repeat_interleave(hop, dim=1).unsqueeze(-1)
        noise_amp = voiced * self.noise_std + (1 - voiced) * self.sine_amp / 3
        noise = noise_amp * self._draw_noise(lengths, sines.shape[1], f0.device, generator)
        excitation = torch.tanh(self.l_linear((sines * voiced + noise).to(self.l_linear.weight.dtype)))

        sample_mask = length_mask(torch.tensor(lengths, device=f0.device), sines.shape[1])
        excitation = excitation.transpose(1, 2) * sample_mask
        return excitation, voiced.transpose(1, 2) * sample_mask

    def _draw_noise(
        self, lengths: list[int], max_len: int, device: torch.device, generator: GeneratorArg
    ) -> torch.Tensor:
        """Sine-branch noise [B, max_len, S] drawn row by row with upstream's exact RNG calls."""
        generators = _per_row_generators(generator, len(lengths))
        noise = torch.zeros(len(lengths), self.num_sines, max_len, device=device).transpose(1, 2)
        for row, (length, gen) in enumerate(zip(lengths, generators)):
            # 1. Initial harmonic phases: upstream adds them at sample 0, which its mid-frame
            #    downsampling to frame rate never reads, so they are drawn and dropped.
            torch.rand(1, self.num_sines, device=device, generator=gen)
            # 2. Upstream calls randn_like on a [1, L, S] view of a [1, S, L] tensor. On CPU a
            #    non-contiguous fill uses a different sampler than a contiguous one, so the same
            #    layout is rebuilt here to get the same numbers.
            row_noise = torch.empty(1, self.num_sines, length, device=device).transpose(1, 2)
            noise[row, :length] = row_noise.normal_(generator=gen)[0]
            # 3. Noise of upstream's unused noise branch: drawn only to keep the RNG stream aligned.
            torch.randn(1, length, 1, device=device, generator=gen)
        return noise


def _per_row_generators(generator: GeneratorArg, rows: int) -> list[torch.Generator | None]:
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * rows
    if len(generator) != rows:
        raise ValueError(f"got {len(generator)} generators for a batch of {rows}")
    return list(generator)


def _hold_last_frame(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Repeat each row's last valid frame into its padding ([B, T, C]).

    Linear interpolation clamps to the last frame at a sequence end; holding that frame in the
    padding makes a padded row interpolate exactly like the same row alone.
    """
    positions = torch.arange(frames.shape[1], device=frames.device)
    index = torch.minimum(positions.unsqueeze(0), (lengths - 1).unsqueeze(1))
    return torch.gather(frames, 1, index.unsqueeze(-1).expand_as(frames))


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B] lengths -> float mask [B, 1, max_len] (1 inside each row, 0 in its padding)."""
    positions = torch.arange(max_len, device=lengths.device)
    return (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(1).float()
