"""Conditional flow matching sampler: fixed noise -> mel by Euler steps with classifier-free guidance."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from a10tts.engine.hparams import nested_args, require
from a10tts.engine.flow.estimator import CausalConditionalDecoder
from a10tts.engine.flow.prefix import FlowPrefix, LayerPrefix, PrefixRecorder

# Upstream seeds torch with 0 and draws randn([1, 80, NOISE_FRAMES]) once, at construction:
# every call starts from the same noise, so identical inputs give identical mel (300 s max).
NOISE_SEED = 0
NOISE_FRAMES = 15000


def fixed_noise(channels: int) -> Tensor:
    """Upstream's start noise ``[1, channels, NOISE_FRAMES]`` (fp32, CPU), from a private generator."""
    generator = torch.Generator(device="cpu").manual_seed(NOISE_SEED)
    return torch.randn([1, channels, NOISE_FRAMES], generator=generator, device="cpu")


class CausalConditionalCFM(nn.Module):
    """Euler solver of the flow ODE around the estimator (upstream ``CausalConditionalCFM``)."""

    def __init__(
        self, estimator: CausalConditionalDecoder, inference_cfg_rate: float, t_scheduler: str = "cosine"
    ) -> None:
        super().__init__()
        if t_scheduler not in ("cosine", "linear"):
            raise ValueError(f"flow.decoder.cfm_params.t_scheduler={t_scheduler!r} is not supported")
        self.estimator = estimator
        self.inference_cfg_rate = inference_cfg_rate
        self.t_scheduler = t_scheduler
        # A plain attribute, not a buffer: not part of the checkpoint, and it must stay fp32 when
        # the module is cast to half precision. It moves to the compute device on first use.
        self._noise = fixed_noise(estimator.out_channels)

    @classmethod
    def from_hparams(cls, args: Mapping[str, Any]) -> CausalConditionalCFM:
        """Build from the yaml's ``flow.decoder`` node args (training-only keys are ignored)."""
        where = "flow.decoder"
        cfm_params = nested_args(args, "cfm_params", where)
        # omegaconf.DictConfig(content={...}) in the yaml; accept a plain mapping too.
        cfm_params = cfm_params.get("content", cfm_params)
        estimator = nested_args(args, "estimator", where, expected_class="CausalConditionalDecoder")
        return cls(
            estimator=CausalConditionalDecoder.from_hparams(estimator),
            inference_cfg_rate=require(cfm_params, "inference_cfg_rate", f"{where}.cfm_params"),
            t_scheduler=cfm_params.get("t_scheduler", "cosine"),
        )

    def noise(self, frames: int, device: torch.device) -> Tensor:
        """The first ``frames`` frames of the fixed start noise, ``[1, C, frames]`` fp32."""
        if frames > NOISE_FRAMES:
            raise ValueError(f"flow input of {frames} mel frames exceeds the {NOISE_FRAMES}-frame noise")
        if self._noise.device != device:
            self._noise = self._noise.to(device)
        return self._noise[:, :, :frames]

    def time_grid(self, n_timesteps: int, device: torch.device) -> Tensor:
        """``n_timesteps + 1`` ODE times from 0 to 1 (cosine: small steps near the noise end)."""
        t = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=torch.float32)
        if self.t_scheduler == "cosine":
            t = 1 - torch.cos(t * 0.5 * math.pi)
        return t

    def forward(
        self,
        mu: Tensor,
        mask: Tensor,
        spks: Tensor,
        cond: Tensor,
        streaming: bool | Tensor = False,
        n_timesteps: int = 10,
    ) -> Tensor:
        """Integrate from the fixed noise to a mel ``[B, C, T]`` (fp32).

        mu, cond ``[B, C, T]``; mask ``[B, 1, T]``; spks ``[B, C]``; all in the estimator's dtype.
        Every row starts from noise frame 0. The ODE state stays fp32 whatever the estimator's
        precision.
        """
        batch, _, frames = mu.shape
        x = self.noise(frames, mu.device).expand(batch, -1, -1)
        return self._solve(x, self.guidance_inputs(mu, mask, spks, cond, streaming), n_timesteps)

    def record_prefix(self, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor, n_timesteps: int = 10) -> FlowPrefix:
        """Integrate one row's whole leading chunks (streaming) and keep, per Euler step, what
        later frames need of them (``prefix.py``). mu, cond ``[1, C, P]``; mask ``[1, 1, P]``."""
        recorders = [PrefixRecorder() for _ in range(n_timesteps)]
        inputs = self.guidance_inputs(mu, mask, spks, cond, True)
        self._solve(self.noise(mu.size(2), mu.device), inputs, n_timesteps, recorders)
        return FlowPrefix.from_recorders(mu.size(2), recorders)

    def continue_prefix(
        self, prefix: FlowPrefix, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor, n_timesteps: int = 10
    ) -> Tensor:
        """Like ``forward`` in streaming mode, for the frames after one voice's prefix, which
        every row continues: from the noise frame where the prefix ends."""
        x = self.noise_after(prefix, mu.size(2), mu.device).expand(mu.size(0), -1, -1)
        inputs = self.guidance_inputs(mu, mask, spks, cond, True)
        return self._solve(x, inputs, n_timesteps, [prefix.reader(step) for step in range(n_timesteps)])

    def noise_after(self, prefix: FlowPrefix, frames: int, device: torch.device) -> Tensor:
        """The fixed noise's ``frames`` frames after ``prefix``'s: ``[1, C, frames]`` fp32."""
        return self.noise(prefix.frames + frames, device)[:, :, prefix.frames:]

    def _solve(self, x: Tensor, inputs: tuple, n_timesteps: int, prefixes: list[LayerPrefix] | None = None) -> Tensor:
        """The Euler loop from ``x``; ``prefixes``: one per step, as the estimator takes them."""
        times = self.time_grid(n_timesteps, x.device)
        for step in range(n_timesteps):
            prefix = None if prefixes is None else prefixes[step]
            x = self.euler_step(x, times[step], times[step + 1] - times[step], inputs, prefix)
        return x

    @staticmethod
    def guidance_inputs(
        mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor, streaming: bool | Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, bool | Tensor]:
        """Estimator inputs of a ``2B`` batch: the rows as given, then the unconditional rows
        (mu, spks and cond zeroed), so both velocities come from one estimator call."""
        return (
            torch.cat([mask, mask]),
            torch.cat([mu, torch.zeros_like(mu)]),
            torch.cat([spks, torch.zeros_like(spks)]),
            torch.cat([cond, torch.zeros_like(cond)]),
            torch.cat([streaming, streaming]) if isinstance(streaming, Tensor) else streaming,
        )

    def euler_step(self, x: Tensor, t: Tensor, dt: Tensor, inputs: tuple, prefix: LayerPrefix | None = None) -> Tensor:
        """``x`` (fp32 ``[B, C, T]``) advanced from time ``t`` by ``dt`` along the guided velocity
        (``prefix``: as the estimator takes it)."""
        mask_in, mu_in, spks_in, cond_in, streaming_in = inputs
        x_in = torch.cat([x, x]).to(mu_in.dtype)
        velocity = self.estimator(x_in, mask_in, mu_in, t.expand(x_in.size(0)), spks_in, cond_in, streaming_in,
                                  prefix)
        conditional, unconditional = velocity.float().chunk(2)
        rate = self.inference_cfg_rate
        return x + dt * ((1.0 + rate) * conditional - rate * unconditional)
