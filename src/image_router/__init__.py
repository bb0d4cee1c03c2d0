"""Image Router: a self-hostable, OpenAI-compatible gateway for image and video generation."""

__version__ = "0.1.0"
