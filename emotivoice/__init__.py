"""EmotiVoice: per-speaker emotion analytics for contact-center calls.

One namespace: emotivoice.connector, emotivoice.analysis, emotivoice.storage, emotivoice.dashboard,
with emotivoice.config and emotivoice.logs beneath them and emotivoice.app (the CLI, `serve`) on top.

The design card keeps connector/, analysis/, storage/ and dashboard/ at the top of the repository,
so they stay there and pyproject's package-dir installs them as emotivoice.* in a wheel. From a
checkout (the editable install, or PYTHONPATH=<checkout>), this package's path also covers the
checkout root, so `emotivoice.analysis` is always the analysis/ beside this file: a second worktree
never picks up another tree's modules, and no bare top-level `analysis` is ever importable.
"""

from pathlib import Path

__version__ = "0.1.0"

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "connector" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 (a package's __path__ is defined at import)
