"""The top layer: the `emotivoice` command and `serve`, which wire connector, analysis and storage.

Nothing below imports this package (tests/test_layers.py); `python -m emotivoice.app` is the CLI.
"""
