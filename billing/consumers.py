"""Live header balance: one websocket per browser tab, one group per user (authenticated only)."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer

from billing.events import wallet_group_name


class WalletConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.group_name = wallet_group_name(user.pk)
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group_name", None):
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """The browser has nothing to say on this socket; ignore it."""

    async def wallet_update(self, event: dict) -> None:
        await self.send(text_data=event["html"])
