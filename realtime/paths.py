"""Where realtime keeps files it makes: the user cache directory (see :func:`engines.files.cache_dir`)."""

from engines.files import cache_dir

__all__ = ["cache_dir"]
