"""Audio input and the acoustic features of the CosyVoice2 frontend, in plain torch/numpy.

* `load_audio`: any soundfile-readable file or bytes -> mono float32 samples, with client-safe errors.
* `resample`: windowed-sinc resampler, numerically torchaudio's `transforms.Resample` defaults.
* `mel_24k`: the flow's prompt mel (Matcha-TTS `mel_spectrogram` as configured by CosyVoice2).
* `whisper_log_mel`: openai-whisper's `log_mel_spectrogram`, input of the speech tokenizer.
* `kaldi_fbank`: Kaldi-compatible fbank (torchaudio `compliance.kaldi.fbank` defaults), input of CAM++.

Feature functions take a waveform [..., N] (any leading batch dims of equal-length signals) and keep
the leading dims. Filter banks and kernels are computed once per configuration in float64.
"""

from __future__ import annotations

import functools
import io
import math
import os
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

MIN_SAMPLE_RATE = 16000


class AudioError(ValueError):
    """Audio that cannot be used as a prompt; the message is meant for the client."""


def load_audio(
    source: str | os.PathLike[str] | bytes, *, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Read audio as mono float32 samples in [-1, 1] (channels averaged) and its sample rate.

    Raises AudioError if it is not readable audio, empty, sampled below 16 kHz, longer than
    `max_seconds`, or holds non-finite samples.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream: Any = io.BytesIO(source)
    elif not os.path.isfile(source):
        raise AudioError(f"{os.fspath(source)}: no such audio file")
    else:
        stream = source
    try:
        with sf.SoundFile(stream) as audio:
            sample_rate, frames = audio.samplerate, audio.frames
            if sample_rate < MIN_SAMPLE_RATE:
                raise AudioError(f"sample rate {sample_rate} Hz is too low; at least {MIN_SAMPLE_RATE} Hz is required")
            if max_seconds is not None and frames > max_seconds * sample_rate:
                raise AudioError(f"audio is {frames / sample_rate:.1f} s long; the limit is {max_seconds:g} s")
            samples = audio.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise AudioError(f"could not read the audio (unsupported or corrupt file): {exc.error_string}") from exc
    if samples.shape[0] == 0:
        raise AudioError("audio is empty")
    if not np.isfinite(samples).all():
        raise AudioError("audio contains NaN or infinite samples")
    return samples.mean(axis=1, dtype=np.float32), sample_rate


# ------------------------------------------------------------------------ resampling


def resample(wav: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """Band-limited resampling of [..., N] with a Hann-windowed sinc (6 zero crossings, rolloff 0.99).

    The rate ratio is reduced to from:to = a:b; every block of `a` input samples yields `b` outputs,
    one polyphase filter each, applied as a strided convolution.
    """
    if from_sr == to_sr:
        return wav
    kernel, width, step = _sinc_kernel(int(from_sr), int(to_sr))
    length = wav.shape[-1]
    flat = F.pad(wav.reshape(-1, 1, length), (width, width + step))
    phases = F.conv1d(flat, kernel.to(wav.device, wav.dtype), stride=step)  # [M, b, blocks]
    out = phases.transpose(1, 2).reshape(flat.shape[0], -1)
    out_len = math.ceil(kernel.shape[0] * length / step)
    return out[:, :out_len].reshape(*wav.shape[:-1], -1)


@functools.lru_cache(maxsize=16)
def _sinc_kernel(from_sr: int, to_sr: int) -> tuple[torch.Tensor, int, int]:
    """Polyphase filters [b, 1, 2*width + a] (float32), the half width and the input step a."""
    zero_crossings, rolloff = 6, 0.99
    common = math.gcd(from_sr, to_sr)
    step, phases = from_sr // common, to_sr // common
    cutoff = min(step, phases) * rolloff  # in cycles per block of `step` input samples
    width = math.ceil(zero_crossings * step / cutoff)
    taps = torch.arange(-width, width + step, dtype=torch.float64) / step
    # Phase offsets are rounded to float32 first, as torchaudio does, to give its exact kernel.
    offsets = (-torch.arange(phases) / phases).to(torch.float64)
    t = ((offsets[:, None] + taps) * cutoff).clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = sinc * window * (cutoff / step)
    return kernel.float().unsqueeze(1), width, step


# ------------------------------------------------------------------------ mel filter banks


# Slaney's Auditory Toolbox mel scale: linear below 1 kHz, logarithmic above. The constants are
# written as librosa writes them so that the float64 roundings agree.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_LOG_HZ = 1000.0
_SLANEY_LOG_MEL = _SLANEY_LOG_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    log = _SLANEY_LOG_MEL + np.log(np.maximum(hz, _SLANEY_LOG_HZ) / _SLANEY_LOG_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_LOG_HZ, log, hz / _SLANEY_HZ_PER_MEL)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    log = _SLANEY_LOG_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_LOG_MEL))
    return np.where(mel >= _SLANEY_LOG_MEL, log, mel * _SLANEY_HZ_PER_MEL)


@functools.lru_cache(maxsize=8)
def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Area-normalised triangular mel filters [n_mels, n_fft//2 + 1], as librosa.filters.mel (slaney).

    The float32 roundings of librosa (triangles, then the normalised weights) are reproduced.
    """
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_range = _hz_to_slaney_mel(np.array([fmin, fmax], dtype=np.float64))
    edges_hz = _slaney_mel_to_hz(np.linspace(mel_range[0], mel_range[1], n_mels + 2))
    lower, center, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz - lower) / (center - lower)
    falling = (upper - fft_hz) / (upper - center)
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights = (triangles * (2.0 / (upper - lower))).astype(np.float32)
    return torch.from_numpy(weights)


def _kaldi_mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


@functools.lru_cache(maxsize=8)
def kaldi_mel_filters(num_bins: int, n_fft: int, sample_rate: int, low_hz: float = 20.0) -> torch.Tensor:
    """Kaldi's triangular mel banks [num_bins, n_fft//2 + 1] (triangles in mel, no area norm).

    Upper edge: Nyquist. The Nyquist FFT bin always gets weight 0, as in Kaldi.
    """
    mel_low, mel_high = _kaldi_mel(torch.tensor([low_hz, sample_rate / 2], dtype=torch.float64)).tolist()
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + delta * torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    center, right = left + delta, left + 2 * delta
    fft_mel = _kaldi_mel(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft))
    rising = (fft_mel - left) / (center - left)
    falling = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return F.pad(banks, (0, 1)).float()


# ------------------------------------------------------------------------ features


def mel_24k(wav: torch.Tensor) -> torch.Tensor:
    """Flow prompt mel of 24 kHz audio [..., N] -> [..., N // 480, 80] (natural-log magnitude)."""
    n_fft, hop = 1920, 480
    pad = (n_fft - hop) // 2  # reflect pad + uncentred STFT: one frame per hop
    padded = F.pad(wav.reshape(-1, 1, wav.shape[-1]), (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(padded, n_fft, hop, window=window, center=False, return_complex=True)
    magnitude = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    filters = slaney_mel_filters(24000, n_fft, 80, 0.0, 8000.0).to(wav.device, wav.dtype)
    mel = torch.log(torch.clamp(filters @ magnitude, min=1e-5))
    return mel.transpose(1, 2).reshape(*wav.shape[:-1], -1, 80)


def whisper_log_mel(wav16k: torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """Whisper log-mel of 16 kHz audio [..., N] -> [..., n_mels, N // 160], each row scaled on its own max."""
    n_fft, hop = 400, 160
    flat = wav16k.reshape(-1, wav16k.shape[-1])
    window = torch.hann_window(n_fft, device=wav16k.device, dtype=wav16k.dtype)
    spec = torch.stft(flat, n_fft, hop, window=window, return_complex=True)
    power = spec[..., :-1].abs() ** 2
    filters = slaney_mel_filters(16000, n_fft, n_mels, 0.0, 8000.0).to(wav16k.device, wav16k.dtype)
    log_mel = torch.clamp(filters @ power, min=1e-10).log10()
    log_mel = torch.maximum(log_mel, log_mel.amax(dim=(1, 2), keepdim=True) - 8.0)
    return ((log_mel + 4.0) / 4.0).reshape(*wav16k.shape[:-1], n_mels, -1)


def kaldi_fbank(wav16k: torch.Tensor, num_mel_bins: int = 80, subtract_mean: bool = False) -> torch.Tensor:
    """Kaldi log fbank of 16 kHz audio [..., N] -> [..., frames, num_mel_bins].

    25 ms Povey windows every 10 ms (only whole windows), DC removal, pre-emphasis 0.97, 512-point
    power spectrum, no dither, log floored at float32 eps. `subtract_mean` removes the per-bin mean
    over time (the CAM++ speaker-embedding input). Audio is expected in [-1, 1], not int16 scale.
    """
    sample_rate, frame_len, shift, n_fft = 16000, 400, 160, 512
    if wav16k.shape[-1] < frame_len:
        raise AudioError("audio is shorter than one 25 ms analysis window")
    frames = wav16k.unfold(-1, frame_len, shift)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # first sample repeats itself
    frames = (frames - 0.97 * previous) * _povey_window(frame_len, wav16k.device, wav16k.dtype)
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2)
    filters = kaldi_mel_filters(num_mel_bins, n_fft, sample_rate).to(wav16k.device, wav16k.dtype)
    fbank = torch.clamp(power @ filters.T, min=torch.finfo(wav16k.dtype).eps).log()
    return fbank - fbank.mean(dim=-2, keepdim=True) if subtract_mean else fbank


def _povey_window(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Kaldi's "povey" window: a symmetric Hann raised to 0.85 (non-zero at the edges' neighbours)."""
    return torch.hann_window(length, periodic=False, dtype=torch.float64).pow(0.85).to(device, dtype)
