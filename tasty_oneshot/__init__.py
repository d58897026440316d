"""Run a TastyTrade LLM agent once per OS timer firing."""

__version__ = "0.1.0"
