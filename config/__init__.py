"""Settings of every fleet process, in one pydantic-settings model (see `config.settings`)."""

from config.settings import FleetSettings, SettingsError, load_settings

__all__ = ["FleetSettings", "SettingsError", "load_settings"]
