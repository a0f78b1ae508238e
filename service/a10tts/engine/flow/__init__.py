"""CosyVoice2 flow: speech tokens -> mel (upsampling conformer encoder + causal flow matching)."""

from a10tts.engine.flow.cfm import CausalConditionalCFM
from a10tts.engine.flow.encoder import UpsampleConformerEncoder
from a10tts.engine.flow.estimator import CausalConditionalDecoder
from a10tts.engine.flow.flow import FlowModel

__all__ = ["CausalConditionalCFM", "CausalConditionalDecoder", "FlowModel", "UpsampleConformerEncoder"]
