"""All websocket routes, one consumer per concern, and a last route that refuses any other path."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

from billing.routing import websocket_urlpatterns as billing_routes
from generation.routing import websocket_urlpatterns as generation_routes


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Closes a socket on a path no consumer serves with 4404, the websocket's "not found"
    (without it the router raises, and every such request logs a traceback)."""

    async def connect(self):
        await self.close(code=4404)


websocket_urlpatterns = [*generation_routes, *billing_routes, re_path(r"", UnknownPathConsumer.as_asgi())]
