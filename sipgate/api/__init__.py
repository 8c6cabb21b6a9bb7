"""Twilio-compatible REST control plane."""

from sipgate.api.app import make_app

__all__ = ["make_app"]
