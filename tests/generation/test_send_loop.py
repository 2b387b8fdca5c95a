"""accounts.realtime.SendLoop: the process's channel-layer sends go through one event loop that
lives on (async_to_sync made a loop and a Redis connection per send, ~5 ms at every denoising
step), still in order, on the real Redis channel layer."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from accounts.realtime import SendLoop


def test_sends_share_one_loop_and_arrive_in_order():
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("send-loop-test", channel)
    sends = SendLoop()
    for step in range(1, 4):
        sends.group_send("send-loop-test", {"type": "job.progress", "step": step})
    first_loop = sends._running_loop()
    sends.group_send("send-loop-test", {"type": "job.state", "state": "succeeded"})
    assert sends._running_loop() is first_loop and first_loop.is_running()

    async def receive_four():
        return [await layer.receive(channel) for _ in range(4)]

    received = async_to_sync(receive_four)()
    assert [message.get("step", message.get("state")) for message in received] == [1, 2, 3, "succeeded"]
    async_to_sync(layer.group_discard)("send-loop-test", channel)
