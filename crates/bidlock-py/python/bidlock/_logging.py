"""Python's `logging` side of the bridge: bidlock logs under the logger `bidlock`
(`bidlock.manager`, `bidlock.lease`, ...), so

    logging.getLogger("bidlock").setLevel(logging.DEBUG)

shows each acquire and release. The compiled module caches logger levels so that a
disabled level costs nothing; this module drops that cache whenever the logging
configuration changes (`setLevel`, `basicConfig`, `disable` all clear logging's own
cache through the same method), so new levels apply at once. The same hook sets the
most verbose level any `bidlock` logger passes as the Rust side's maximum, so records
nobody listens to are not even built.
"""

import logging
from typing import Any

from . import _native

logger = logging.getLogger("bidlock")
logger.addHandler(logging.NullHandler())


def _install_reset_hook() -> None:
    manager = logging.Logger.manager
    original = getattr(manager, "_clear_cache", None)
    if original is None or getattr(original, "_bidlock_reset", False):
        return

    def _clear_cache(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        _native.reset_log_cache()

    setattr(_clear_cache, "_bidlock_reset", True)
    # A private method of logging's manager, present in every CPython since 3.7; without
    # it (above) level changes apply once the cache is next reset.
    setattr(manager, "_clear_cache", _clear_cache)


_install_reset_hook()
