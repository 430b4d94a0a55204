"""The platform library of the AI trading platform: infrastructure every service shares."""

__version__ = "0.1.0"
