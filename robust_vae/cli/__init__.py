"""The ``robust-vae`` command line: ``app`` (parser and entry point), ``options`` (shared
arguments) and one module per command. Nothing below this layer imports it."""
