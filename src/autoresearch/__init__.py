"""autoresearch: autonomous LLM-pretraining research on the machine at hand."""

__version__ = "0.1.0"
