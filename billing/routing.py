from django.urls import path

from billing.consumers import WalletConsumer

websocket_urlpatterns = [
    path("ws/wallet/", WalletConsumer.as_asgi()),
]
