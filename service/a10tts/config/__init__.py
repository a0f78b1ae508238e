"""Configuration: one pydantic schema, layered TOML files, profiles. Never imports torch."""

from .errors import ConfigError, Problem
from .loader import LoadedConfig, load_config
from .paths import Dirs
from .schema import Config

__all__ = ["Config", "ConfigError", "Dirs", "LoadedConfig", "Problem", "load_config"]
