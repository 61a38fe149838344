"""Memoising per-request work on strings the client chooses, with bounded memory."""

import functools
from collections.abc import Callable

# Longer strings are computed every time: the caches below hold at most maxsize of these.
MAX_KEY_CHARS = 512


def memoised(maxsize: int = 2048) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """functools.lru_cache for a function of a string (and hashable extras), keeping only strings
    of up to MAX_KEY_CHARS characters: a client sending long unique paths or queries can neither
    grow the cache past maxsize * MAX_KEY_CHARS nor make it hold large strings."""

    def wrap(fn: Callable[..., str]) -> Callable[..., str]:
        cached = functools.lru_cache(maxsize)(fn)

        @functools.wraps(fn)
        def call(text: str, *args):
            return cached(text, *args) if len(text) <= MAX_KEY_CHARS else fn(text, *args)

        call.cache_info = cached.cache_info  # type: ignore[attr-defined]
        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call

    return wrap
