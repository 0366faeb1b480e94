"""Raptor, the legacy Flask app Queue takes over from: a stand-in on its real schema."""

from .config import Config, ConfigError
from .web import create_app

__all__ = ["Config", "ConfigError", "create_app"]
