"""onnxruntime runners for the two ONNX models shipped with CosyVoice2.

* ``speech_tokenizer_v2.onnx``: 128-bin whisper log-mel of 16 kHz audio -> 25 Hz speech tokens.
* ``campplus.onnx``: 80-bin kaldi fbank of 16 kHz audio -> 192-d CAM++ speaker embedding.

Input names and dtypes are read from each session, so re-exported graphs with other names
still run. Both models take one utterance at a time (batch dimension 1), like upstream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

# Whisper frames are 10 ms; the tokenizer was trained on at most 30 s windows.
SPEECH_TOKENIZER_MAX_FRAMES = 3000

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


class OnnxModelError(RuntimeError):
    """An ONNX model file could not be loaded or does not have the expected interface."""


def execution_providers(device: torch.device | str) -> list:
    """CUDA (on the requested GPU) when asked for and available, with CPU as the fallback."""
    device = torch.device(device)
    providers: list = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    return providers


def create_session(
    path: str | Path, device: torch.device | str = "cpu", intra_op_threads: int = 1
) -> ort.InferenceSession:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=execution_providers(device))
    except Exception as exc:  # onnxruntime raises several unrelated types for bad files
        raise OnnxModelError(f"cannot load ONNX model {path}: {exc}") from exc


class _OnnxRunner:
    def __init__(self, path: str | Path, n_inputs: int, device: torch.device | str, intra_op_threads: int):
        self.path = Path(path)
        self.session = create_session(self.path, device, intra_op_threads)
        inputs = self.session.get_inputs()
        if len(inputs) != n_inputs:
            raise OnnxModelError(f"{self.path}: expected {n_inputs} inputs, the graph has {len(inputs)}")
        self._input_names = [i.name for i in inputs]
        self._input_dtypes = [_ORT_DTYPES.get(i.type) for i in inputs]
        if None in self._input_dtypes:
            raise OnnxModelError(f"{self.path}: unsupported input types {[i.type for i in inputs]}")
        self._input_shapes = [i.shape for i in inputs]

    def _check_width(self, tensor: torch.Tensor, axis: int, name: str) -> None:
        # A fixed width in the graph (e.g. 128 mel bins) is checked here for a readable message.
        expected = self._input_shapes[0][axis]
        if isinstance(expected, int) and tensor.shape[axis] != expected:
            raise ValueError(f"{self.path.name} expects {expected} {name}, got {tensor.shape[axis]}")

    def _run(self, *arrays: np.ndarray) -> np.ndarray:
        feed = {
            name: np.ascontiguousarray(array, dtype=dtype)
            for name, dtype, array in zip(self._input_names, self._input_dtypes, arrays)
        }
        return self.session.run(None, feed)[0]


class SpeechTokenizer(_OnnxRunner):
    """``speech_tokenizer_v2.onnx``: whisper log-mel [n_mels, T] -> int32 speech tokens [T']."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", intra_op_threads: int = 1):
        super().__init__(path, 2, device, intra_op_threads)

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        if log_mel.dim() == 3 and log_mel.shape[0] == 1:
            log_mel = log_mel[0]
        if log_mel.dim() != 2:
            raise ValueError(f"log-mel must be [n_mels, frames], got shape {tuple(log_mel.shape)}")
        log_mel = log_mel.unsqueeze(0)
        self._check_width(log_mel, 1, "mel bins")
        n_frames = log_mel.shape[-1]
        if n_frames > SPEECH_TOKENIZER_MAX_FRAMES:
            raise ValueError(
                f"speech tokens can be extracted from at most 30 s of audio, got {n_frames / 100:.2f} s"
            )
        tokens = self._run(log_mel.detach().float().cpu().numpy(), np.array([n_frames]))
        return torch.from_numpy(np.asarray(tokens).reshape(-1).astype(np.int32))


class SpeakerEncoder(_OnnxRunner):
    """``campplus.onnx``: raw kaldi fbank [T, 80] -> float32 speaker embedding [192].

    The per-utterance mean is removed here, as the model was trained on mean-normalised fbank.
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", intra_op_threads: int = 1):
        super().__init__(path, 1, device, intra_op_threads)

    def __call__(self, fbank: torch.Tensor) -> torch.Tensor:
        if fbank.dim() == 3 and fbank.shape[0] == 1:
            fbank = fbank[0]
        if fbank.dim() != 2 or fbank.shape[0] == 0:
            raise ValueError(f"fbank must be [frames, bins] with frames > 0, got shape {tuple(fbank.shape)}")
        fbank = fbank.detach().float().cpu()
        normalised = (fbank - fbank.mean(dim=0, keepdim=True)).unsqueeze(0)
        self._check_width(normalised, 2, "fbank bins")
        embedding = self._run(normalised.numpy())
        return torch.from_numpy(np.asarray(embedding, dtype=np.float32).reshape(-1))
