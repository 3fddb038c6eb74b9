"""One module per verb: each takes a typed request, does the work through the layers below and
returns what the CLI prints."""
