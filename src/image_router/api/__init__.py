"""The HTTP API edge: thin endpoints over the use cases, and who is calling."""
