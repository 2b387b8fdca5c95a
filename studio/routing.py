"""All websocket routes, one consumer per concern."""

from billing.routing import websocket_urlpatterns as billing_routes
from generation.routing import websocket_urlpatterns as generation_routes

websocket_urlpatterns = [*generation_routes, *billing_routes]
