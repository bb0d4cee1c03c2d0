"""Command-line groups beyond the core ones in cli.py; each module adds one Typer group,
registered in cli.py. Edge code: commands parse argv and call services."""
