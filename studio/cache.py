"""The shared cache (Redis), which holds only allauth's rate-limit counters.

When Redis is unreachable it behaves as an empty cache that takes every write: rate limits lapse
for the outage, and logins and sign-ups go on instead of failing with a 500. During an outage it
tries Redis again at most once every RETRY_SECONDS, so a hung Redis costs one socket timeout now
and then, not one per call. One log line when it goes, one when it is back.
"""

from __future__ import annotations

import logging
import time

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0
_outage = {"on": False, "retry_at": 0.0}  # shared by every thread's cache instance


def _fail_open(fallback):
    def wrap(method):
        def call(self, *args, **kwargs):
            def fall_back():
                return fallback(*args, **kwargs) if callable(fallback) else fallback

            if _outage["on"] and time.monotonic() < _outage["retry_at"]:
                return fall_back()
            try:
                result = method(self, *args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError) as error:
                _outage["retry_at"] = time.monotonic() + RETRY_SECONDS
                if not _outage["on"]:
                    _outage["on"] = True
                    log.warning("Shared cache unreachable (%s): login and sign-up rate limits are off until "
                                "it is back", error)
                return fall_back()
            if _outage["on"]:
                _outage["on"] = False
                log.warning("Shared cache reachable again: rate limits are back on")
            return result
        return call
    return wrap


class FailOpenRedisCache(RedisCache):
    add = _fail_open(True)(RedisCache.add)  # True: allauth's lock is taken
    get = _fail_open(lambda key, default=None, version=None: default)(RedisCache.get)
    set = _fail_open(None)(RedisCache.set)
    touch = _fail_open(False)(RedisCache.touch)
    delete = _fail_open(False)(RedisCache.delete)
    get_many = _fail_open({})(RedisCache.get_many)
    has_key = _fail_open(False)(RedisCache.has_key)
    set_many = _fail_open([])(RedisCache.set_many)
    delete_many = _fail_open(None)(RedisCache.delete_many)
    clear = _fail_open(None)(RedisCache.clear)
