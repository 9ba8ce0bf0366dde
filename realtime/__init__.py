"""realtime: age group and gender for every face in live video."""

from realtime.errors import RealtimeError

__version__ = "0.1.0"
__all__ = ["RealtimeError", "__version__"]
