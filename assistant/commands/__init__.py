"""The `assistant` command's subcommands, one module per area (see assistant/cli.py)."""
