"""Media Support Assistant: grounded answers for media and streaming customer support."""

__version__ = "0.1.0"
