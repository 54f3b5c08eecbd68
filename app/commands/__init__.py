"""One module per `python -m app` command."""
