"""HiFT vocoder (CosyVoice2 `HiFTGenerator`): 80-bin mel at 50 Hz -> 24 kHz waveform.

mel -> f0 (conv stack) -> harmonic-plus-noise excitation (`hift_source`) -> HiFi-GAN style
upsampling network fused with the excitation's STFT at every resolution -> magnitude/phase of a
16-point STFT -> inverse STFT -> clamp.

Checkpoints store most convolutions with weight norm (g, v); it is folded into plain weights at
load time so inference runs ordinary convolutions. Batches of mels of different lengths are
supported: padding is zeroed before every convolution and the reflect pads / overlap-add are done
per row, so a padded row gives the same samples as the row alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from a10tts.engine.checkpoint import CheckpointError, compare_keys
from a10tts.engine.cuda_graphs import HiftGraphs
from a10tts.engine.hparams import nested_args, require
from a10tts.engine.hift_source import GeneratorArg, HarmonicNoiseSource, length_mask

_LEGACY_WEIGHT_NORM = {"weight_g": "original0", "weight_v": "original1"}  # torch.nn.utils.weight_norm keys
_CHECKPOINT_PREFIX = "generator."  # left by HiFi-GAN training wrappers


class WeightNormConv1d(nn.Conv1d):
    """A Conv1d whose checkpoint weight is stored as weight norm (g, v)."""


class WeightNormConvTranspose1d(nn.ConvTranspose1d):
    """A ConvTranspose1d whose checkpoint weight is stored as weight norm (g, v over input channels)."""


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _length_mask(lengths: torch.Tensor | None, max_len: int, device: torch.device) -> torch.Tensor | None:
    return None if lengths is None else length_mask(lengths.to(device), max_len)


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha, one alpha per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view(1, -1, 1)
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    """Residual stack of (Snake, dilated conv, Snake, conv) units."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()

        def conv(dilation: int) -> WeightNormConv1d:
            padding = dilation * (kernel_size - 1) // 2
            return WeightNormConv1d(channels, channels, kernel_size, dilation=dilation, padding=padding)

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1, self.activations2, self.convs2):
            y = conv1(_masked(act1(x), mask))
            x = x + conv2(_masked(act2(y), mask))
        return x


class F0Predictor(nn.Module):
    """Upstream `ConvRNNF0Predictor`: five conv+ELU layers and a linear head, |.| as f0 in Hz."""

    def __init__(self, in_channels: int, cond_channels: int, num_layers: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_layers):  # ELUs interleaved so the convs keep keys condnet.{0,2,4,...}
            conv_in = in_channels if i == 0 else cond_channels
            layers += [WeightNormConv1d(conv_in, cond_channels, 3, padding=1), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, 1)

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """mel [B, n_mels, T] -> f0 [B, T] (zero past each row's length)."""
        mask = _length_mask(mel_lengths, mel.shape[-1], mel.device)
        x = mel
        for conv in self.condnet[::2]:
            x = F.elu(conv(_masked(x, mask)))
        f0 = self.classifier(x.transpose(1, 2)).squeeze(-1).abs()
        return f0 if mask is None else f0 * mask[:, 0]


class HiFTGenerator(nn.Module):
    """Upstream `HiFTGenerator` (24 kHz, SineGen2 source); keys match upstream checkpoints.

    Inputs are batches of mels [B, n_mels, T] with optional `mel_lengths` [B] (on the mel's
    device); every output sample past a row's `mel_lengths * samples_per_frame` is zero.
    """

    def __init__(
        self,
        *,
        f0_predictor: F0Predictor,
        in_channels: int,
        base_channels: int,
        sampling_rate: int,
        upsample_rates: Sequence[int],
        upsample_kernel_sizes: Sequence[int],
        istft_params: Mapping[str, int],
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        source_resblock_kernel_sizes: Sequence[int],
        source_resblock_dilation_sizes: Sequence[Sequence[int]],
        nb_harmonics: int = 8,
        nsf_alpha: float = 0.1,
        nsf_sigma: float = 0.003,
        nsf_voiced_threshold: float = 10.0,
        lrelu_slope: float = 0.1,
        audio_limit: float = 0.99,
    ) -> None:
        super().__init__()
        if sampling_rate == 22050:
            raise ValueError("the 22.05 kHz HiFT of CosyVoice 1 (SineGen source) is not supported")
        self.n_fft = int(istft_params["n_fft"])
        self.istft_hop = int(istft_params["hop_len"])
        self.upsample_rates = list(upsample_rates)
        self.samples_per_frame = math.prod(self.upsample_rates) * self.istft_hop
        self.lrelu_slope = lrelu_slope
        self.audio_limit = audio_limit
        self.num_kernels = len(resblock_kernel_sizes)

        self.f0_predictor = f0_predictor
        self.m_source = HarmonicNoiseSource(
            sampling_rate, self.samples_per_frame, nb_harmonics, nsf_alpha, nsf_sigma, nsf_voiced_threshold
        )
        self.conv_pre = WeightNormConv1d(in_channels, base_channels, 7, padding=3)

        stages = range(len(self.upsample_rates))
        widths = [base_channels // 2 ** (i + 1) for i in stages]
        self.ups = nn.ModuleList(
            WeightNormConvTranspose1d(2 * width, width, k, u, padding=(k - u) // 2)
            for width, u, k in zip(widths, self.upsample_rates, upsample_kernel_sizes)
        )
        # Excitation STFT (n_fft/2+1 real + imag channels) downsampled to each stage's frame rate.
        spec_channels = self.n_fft + 2
        self.source_downs = nn.ModuleList()
        for i, width in enumerate(widths):
            stride = math.prod(self.upsample_rates[i + 1 :])
            self.source_downs.append(
                nn.Conv1d(spec_channels, width, 1)
                if stride == 1
                else nn.Conv1d(spec_channels, width, 2 * stride, stride, padding=stride // 2)
            )
        self.source_resblocks = nn.ModuleList(
            ResBlock(width, k, d)
            for width, k, d in zip(widths, source_resblock_kernel_sizes, source_resblock_dilation_sizes)
        )
        self.resblocks = nn.ModuleList(
            ResBlock(width, k, d)
            for width in widths
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes)
        )
        self.conv_post = WeightNormConv1d(widths[-1], spec_channels, 7, padding=3)
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64).float()
        self.register_buffer("stft_window", window, persistent=False)
        self._graphs: HiftGraphs | None = None  # set by enable_cuda_graphs

    @classmethod
    def from_hparams(cls, args: Mapping[str, Any]) -> HiFTGenerator:
        """Build from the yaml `hift` node's args (nested `f0_predictor` node included)."""
        predictor = nested_args(args, "f0_predictor", "hift", expected_class="ConvRNNF0Predictor")
        if require(predictor, "num_class", "hift.f0_predictor") != 1:
            raise ValueError("hift.f0_predictor.num_class must be 1 (one f0 value per frame)")
        istft = require(args, "istft_params", "hift")
        for key in ("n_fft", "hop_len"):
            require(istft, key, "hift.istft_params")
        required = (
            "in_channels", "base_channels", "sampling_rate", "upsample_rates", "upsample_kernel_sizes",
            "resblock_kernel_sizes", "resblock_dilation_sizes", "source_resblock_kernel_sizes",
            "source_resblock_dilation_sizes",
        )
        optional = ("nb_harmonics", "nsf_alpha", "nsf_sigma", "nsf_voiced_threshold", "lrelu_slope", "audio_limit")
        kwargs = {key: require(args, key, "hift") for key in required}
        kwargs.update({key: args[key] for key in optional if key in args})
        f0_predictor = F0Predictor(
            require(predictor, "in_channels", "hift.f0_predictor"),
            require(predictor, "cond_channels", "hift.f0_predictor"),
        )
        return cls(f0_predictor=f0_predictor, istft_params=istft, **kwargs)

    # ---------------------------------------------------------------- checkpoints

    def _weight_norm_modules(self) -> set[str]:
        return {
            name
            for name, module in self.named_modules()
            if isinstance(module, (WeightNormConv1d, WeightNormConvTranspose1d))
        }

    def upstream_key_shapes(self) -> dict[str, tuple[int, ...]]:
        """State-dict keys and shapes of an upstream checkpoint for this architecture."""
        normed = self._weight_norm_modules()
        shapes: dict[str, tuple[int, ...]] = {}
        for key, tensor in self.state_dict().items():
            module, _, leaf = key.rpartition(".")
            if module in normed and leaf == "weight":
                shapes[f"{module}.parametrizations.weight.original0"] = (tensor.shape[0], 1, 1)
                shapes[f"{module}.parametrizations.weight.original1"] = tuple(tensor.shape)
            else:
                shapes[key] = tuple(tensor.shape)
        return shapes

    @staticmethod
    def canonicalize_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream keys in one spelling: no `generator.` prefix, parametrized weight norm."""
        return {_canonical_key(key): value for key, value in state_dict.items()}

    def load_upstream_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strictly load an upstream HiFT state dict, folding weight norm into plain weights.

        Accepts parametrized (`.parametrizations.weight.original0/1`) and legacy
        (`.weight_g/.weight_v`) weight norm, with or without a `generator.` key prefix.
        """
        checkpoint = self.canonicalize_state_dict(state_dict)
        report = compare_keys(self.upstream_key_shapes(), checkpoint)
        if not report.ok:
            raise CheckpointError(f"HiFT checkpoint does not match the model: {report.describe()}")

        plain: dict[str, torch.Tensor] = {}
        for key, value in checkpoint.items():
            module, _, leaf = key.partition(".parametrizations.weight.")
            if leaf == "original0":
                direction = checkpoint[f"{module}.parametrizations.weight.original1"]
                plain[f"{module}.weight"] = _fold_weight_norm(value, direction)
            elif leaf != "original1":
                plain[key] = value
        self.load_state_dict(plain, strict=True)

    # ---------------------------------------------------------------- inference

    def enable_cuda_graphs(self, max_batch_size: int, max_frames: int, max_batch_frames: int | None = 1024) -> None:
        """Run `inference`'s decode network from CUDA graphs, all captured now (on the module's
        CUDA device: move it first), for batches of up to `max_batch_size` rows, `max_frames`
        mel frames and `max_batch_frames` rows x frames (`HiftGraphs`); others run eagerly."""
        self._graphs = HiftGraphs(self, max_batch_size, max_frames, max_batch_frames)
        self._graphs.prepare(max_frames)

    @torch.inference_mode()
    def inference(
        self,
        mel: torch.Tensor,
        mel_lengths: torch.Tensor | None = None,
        cache_source: torch.Tensor | Sequence[torch.Tensor] | None = None,
        generator: GeneratorArg = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, n_mels, T] -> (speech [B, T*hop], excitation [B, 1, T*hop]).

        `cache_source` ([B, 1, C] for every row, or one [1, C] / [C] tensor per row) overwrites the
        start of the new excitation with the tail kept from the previous streaming chunk, which
        avoids a phase jump at the chunk boundary. `generator`: see `HarmonicNoiseSource.forward`.
        """
        f0 = self.f0_predictor(mel, mel_lengths)
        source, _ = self.m_source(f0, mel_lengths, generator)
        if cache_source is not None:
            rows = cache_source if isinstance(cache_source, Sequence) else list(cache_source)
            for row, cached in enumerate(rows):
                cached = cached.reshape(-1)
                source[row, 0, : cached.numel()] = cached.to(source.dtype)
        decode = self.decode if self._graphs is None else self._graphs
        return decode(mel, source, mel_lengths), source

    @torch.inference_mode()
    def decode(
        self, mel: torch.Tensor, source: torch.Tensor, mel_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """mel [B, n_mels, T] and excitation [B, 1, T*hop] -> speech [B, T*hop] (zero past lengths)."""
        # Padding masks per resolution: mel frames, then after each upsampling stage. The last
        # stage gains one frame from the left reflection pad, matching the n+1 frames of the
        # excitation's centered STFT.
        frames, scale = mel.shape[-1], 1
        masks = [_length_mask(mel_lengths, frames, mel.device)]
        for i, rate in enumerate(self.upsample_rates):
            scale *= rate
            extra = int(i == len(self.upsample_rates) - 1)
            lengths = None if mel_lengths is None else mel_lengths * scale + extra
            masks.append(_length_mask(lengths, frames * scale + extra, mel.device))
        source_spec = _masked(self._source_stft(source[:, 0], mel_lengths).to(mel.dtype), masks[-1])

        x = self.conv_pre(_masked(mel, masks[0]))
        for i, up in enumerate(self.ups):
            x = up(_masked(F.leaky_relu(x, self.lrelu_slope), masks[i]))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](source_spec), masks[i + 1])
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x, masks[i + 1]) for block in blocks) / self.num_kernels
        # Upstream uses leaky_relu's default slope (0.01) here, not lrelu_slope.
        x = self.conv_post(_masked(F.leaky_relu(x), masks[-1]))

        bins = self.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :bins]).clamp(max=1e2)
        phase = torch.sin(x[:, bins:])  # upstream's sin: a bounded phase in [-1, 1] radians
        speech = self._istft(magnitude.float(), phase.float(), masks[-1])
        speech = speech.clamp(-self.audio_limit, self.audio_limit)
        if mel_lengths is not None:
            speech = speech * _length_mask(mel_lengths * self.samples_per_frame, speech.shape[-1], mel.device)[:, 0]
        return speech

    def _source_stft(self, source: torch.Tensor, mel_lengths: torch.Tensor | None) -> torch.Tensor:
        """Centered STFT of the excitation [B, L] -> [B, n_fft + 2, L/hop + 1] (real then imag)."""
        half, total = self.n_fft // 2, source.shape[1]
        lengths = torch.tensor([total]) if mel_lengths is None else mel_lengths * self.samples_per_frame
        lengths = lengths.to(source.device)[:, None]
        # Reflect each row at its own end (torch's reflect pad would reflect at the padded end).
        index = (torch.arange(total + 2 * half, device=source.device) - half).abs().unsqueeze(0)
        index = torch.where(index < lengths, index, 2 * (lengths - 1) - index)
        padded = torch.gather(source.float(), 1, index.clamp(0, total - 1).expand(source.shape[0], -1))
        spec = torch.stft(
            padded, self.n_fft, self.istft_hop, window=self.stft_window.float(), center=False, return_complex=True
        )
        return torch.cat([spec.real, spec.imag], dim=1)

    def _istft(self, magnitude: torch.Tensor, phase: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """Inverse of the centered STFT with per-row window normalisation -> [B, hop * (n - 1)].

        Padding frames are excluded from both the overlap-add and the window envelope, so a padded
        row's tail is normalised exactly as when the row is alone.
        """
        window = self.stft_window.float()
        frames = torch.fft.irfft(torch.polar(magnitude, phase), n=self.n_fft, dim=1) * window[:, None]
        weights = window.pow(2)[None, :, None].expand_as(frames)
        if frame_mask is not None:
            frames, weights = frames * frame_mask, weights * frame_mask
        num_frames = frames.shape[-1]
        out_len = self.n_fft + self.istft_hop * (num_frames - 1)

        def overlap_add(x: torch.Tensor) -> torch.Tensor:
            return F.fold(x, (1, out_len), (1, self.n_fft), stride=(1, self.istft_hop))[:, 0, 0]

        half = self.n_fft // 2
        signal = overlap_add(frames)[:, half:-half]
        envelope = overlap_add(weights)[:, half:-half]
        return torch.where(envelope > 1e-11, signal / envelope.clamp(min=1e-11), 0.0)


def _fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """w = g * v / ||v||, the norm taken over every dim but 0 (the input channel for transposed convs)."""
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return v * (g / norm)


def _canonical_key(key: str) -> str:
    """Strip a `generator.` prefix and rename legacy weight-norm keys to the parametrized names."""
    key = key.removeprefix(_CHECKPOINT_PREFIX)
    module, _, leaf = key.rpartition(".")
    if leaf in _LEGACY_WEIGHT_NORM:
        return f"{module}.parametrizations.weight.{_LEGACY_WEIGHT_NORM[leaf]}"
    return key
