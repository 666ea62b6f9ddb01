"""Python's `logging` side of the bridge: bidlock logs under the logger `bidlock`
(`bidlock.manager`, `bidlock.lease`, ...), so

    logging.getLogger("bidlock").setLevel(logging.DEBUG)

shows each acquire and release. The compiled module caches logger levels so that a
disabled level costs nothing; this module drops that cache whenever the logging
configuration changes (`setLevel`, `basicConfig`, `disable` all clear logging's own
cache through the same method), so new levels apply at once.
"""

import logging

from . import _native

logger = logging.getLogger("bidlock")
logger.addHandler(logging.NullHandler())


def _install_reset_hook() -> None:
    manager = logging.Logger.manager
    original = getattr(manager, "_clear_cache", None)
    if original is None or getattr(original, "_bidlock_reset", False):
        return

    def _clear_cache(*args, **kwargs):
        original(*args, **kwargs)
        _native.reset_log_cache()

    _clear_cache._bidlock_reset = True  # type: ignore[attr-defined]
    manager._clear_cache = _clear_cache  # type: ignore[method-assign]


_install_reset_hook()
