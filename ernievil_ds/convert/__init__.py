"""Converters from other releases of ERNIE-ViL to this project's Hugging Face format."""
