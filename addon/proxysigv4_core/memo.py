"""Memoising per-request work on strings the client chooses, with bounded memory."""

import functools
from collections.abc import Callable, Hashable

# Longer strings are computed every time: the caches below hold at most maxsize of these.
MAX_KEY_CHARS = 512


class Memoised:
    """`fn` (of a string and hashable extras) through functools.lru_cache for strings of up to
    MAX_KEY_CHARS characters, computed afresh for longer ones."""

    def __init__(self, fn: Callable[..., str], maxsize: int) -> None:
        self._fn = fn
        self._cached = functools.lru_cache(maxsize)(fn)
        self.cache_info = self._cached.cache_info
        self.cache_clear = self._cached.cache_clear
        functools.update_wrapper(self, fn)

    def __call__(self, text: str, *args: Hashable) -> str:
        return self._cached(text, *args) if len(text) <= MAX_KEY_CHARS else self._fn(text, *args)


def memoised(maxsize: int = 2048) -> Callable[[Callable[..., str]], Memoised]:
    """functools.lru_cache for a function of a string (and hashable extras), keeping only strings
    of up to MAX_KEY_CHARS characters: a client sending long unique paths or queries can neither
    grow the cache past maxsize * MAX_KEY_CHARS nor make it hold large strings."""

    def wrap(fn: Callable[..., str]) -> Memoised:
        return Memoised(fn, maxsize)

    return wrap
