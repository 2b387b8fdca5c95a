"""WhiteNoise, async-capable: WhiteNoise 6 is a sync-only middleware, so under daphne Django ran every
request's whole chain (async views included) in a thread through it. A1111's txt2img waits for its
job in an async view; through a sync middleware that wait would hold the one thread-sensitive worker
thread (serialising every other request behind it) and a client's disconnect would never reach the
view. Static files are served exactly as before (in a thread); everything else stays async."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None):
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
