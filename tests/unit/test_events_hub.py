"""EventsHub: llama-swap's wire format, encode once, bounded queues, close (server spec §14)."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from modelswap.observability.events_hub import EventsHub, encode_event


def decode(message: bytes) -> tuple[str, object]:
    """(type, data) of one wire message, checking its framing on the way."""
    assert message.startswith(b"event:message\ndata:")
    assert message.endswith(b"\n\n")
    envelope = json.loads(message[len(b"event:message\ndata:") : -2])
    assert isinstance(envelope["data"], str)  # double-encoded
    return envelope["type"], json.loads(envelope["data"])


def test_wire_format_is_llama_swaps_byte_for_byte() -> None:
    message = encode_event("profileChanged", {"active": "coding", "x": [1, "é"]})
    assert message == (
        b'event:message\ndata:{"type":"profileChanged",'
        b'"data":"{\\"active\\":\\"coding\\",\\"x\\":[1,\\"\xc3\xa9\\"]}"}\n\n'
    )
    assert decode(message) == ("profileChanged", {"active": "coding", "x": [1, "é"]})


def test_wire_format_equals_json_dumps_twice_for_awkward_text() -> None:
    """The envelope is written by hand: it must equal ``json.dumps`` of the nested form."""
    data = {"data": 'quote " backslash \\ newline \n tab \t nul \x00 é 😀 \u2028 </script>'}
    inner = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    envelope = json.dumps(
        {"type": "logData", "data": inner}, separators=(",", ":"), ensure_ascii=False
    )
    assert encode_event("logData", data) == b"event:message\ndata:" + envelope.encode() + b"\n\n"
    assert decode(encode_event("logData", data)) == ("logData", data)


def test_publish_without_subscribers_does_not_serialise() -> None:
    hub = EventsHub()
    hub.publish("modelStatus", object())  # not JSON-serialisable: must not be touched
    hub.publish_activity(1, {"unserialisable": object()})
    assert hub.published == 0
    assert not hub.has_subscribers


def test_one_encoding_shared_by_every_subscriber() -> None:
    hub = EventsHub()
    a, b = hub.subscribe(), hub.subscribe()
    hub.publish("activity", {"id": 3})
    got_a, got_b = a.get_nowait(), b.get_nowait()
    assert got_a == got_b == [encode_event("activity", {"id": 3})]
    assert got_a[0] is got_b[0]
    assert hub.published == 1


def test_full_queue_drops_and_counts_without_hurting_others() -> None:
    hub = EventsHub(queue_messages=2)
    slow, fast = hub.subscribe(), hub.subscribe()
    for i in range(5):
        hub.publish("activity", {"id": i})
        assert [decode(m)[1] for m in fast.get_nowait()] == [{"id": i}]
    assert [decode(m)[1] for m in slow.get_nowait()] == [{"id": 0}, {"id": 1}]
    assert slow.dropped == 3 and fast.dropped == 0
    assert hub.dropped == 3
    hub.publish("activity", {"id": 9})  # room again: delivery resumes
    assert [decode(m)[1] for m in slow.get_nowait()] == [{"id": 9}]


def test_publish_activity_sends_activity_then_metrics_row() -> None:
    hub = EventsHub()
    sub = hub.subscribe()
    row = {"id": 4, "model": "m1", "tokens": {"input_tokens": 1}}
    hub.publish_activity(4, row)
    hub.publish_activity(5, None)
    assert [decode(m) for m in sub.get_nowait()] == [
        ("activity", {"id": 4}),
        ("metrics", [row]),
        ("activity", {"id": 5}),
    ]


def test_closing_a_subscription_unsubscribes_it() -> None:
    hub = EventsHub()
    with hub.subscribe() as sub:
        assert hub.subscriber_count == 1
    assert sub.closed and hub.subscriber_count == 0
    hub.publish("activity", {"id": 1})
    assert hub.published == 0


@pytest.mark.timeout(5)
async def test_iteration_delivers_in_order_and_hub_close_ends_it() -> None:
    hub = EventsHub()
    sub = hub.subscribe()
    received: list[object] = []
    arrived = asyncio.Condition()

    async def reader() -> None:
        async for message in sub:
            async with arrived:
                received.append(decode(message)[1])
                arrived.notify_all()

    task = asyncio.create_task(reader())
    async with asyncio.timeout(2):
        for i in (1, 2, 3):  # one at a time: the reader waits on an empty queue in between
            hub.publish("activity", {"id": i})
            async with arrived:
                await arrived.wait_for(lambda i=i: len(received) == i)
        hub.close()
        await task  # the stream ended: nothing else held it open
    assert received == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert hub.closed and hub.subscriber_count == 0


async def test_hub_close_drops_what_is_queued_and_later_subscribers_start_closed() -> None:
    hub = EventsHub()
    sub = hub.subscribe()
    hub.publish("activity", {"id": 1})
    hub.close()
    async with asyncio.timeout(2):
        assert await sub.wait_messages() == []
        late = hub.subscribe()
        assert late.closed
        assert await late.wait_messages() == []
    hub.publish("activity", {"id": 2})
    assert hub.published == 1


def test_get_nowait_returns_every_queued_message_at_once() -> None:
    hub = EventsHub()
    sub = hub.subscribe()
    hub.publish("a", 1)
    hub.publish("b", 2)
    assert [decode(m) for m in sub.get_nowait()] == [("a", 1), ("b", 2)]
    assert sub.get_nowait() == []


async def test_subscribers_are_woken_once_per_send_window_with_everything_published() -> None:
    """Many messages in one window: one wake-up, all of them at once (one write per client)."""
    hub = EventsHub(send_window=0.05)
    producer_ran: list[int] = []

    def producer() -> None:  # runs just before the send: what it publishes goes along
        producer_ran.append(hub.subscriber_count)
        hub.publish("inflight", {"operation": "remove", "id": "1"})

    with hub.subscribe() as first, hub.subscribe() as second:
        hub.publish("activity", {"id": 1})
        hub.before_send(producer)
        hub.publish("activity", {"id": 2})
        waiting = asyncio.create_task(first.wait_messages())
        await asyncio.sleep(0)  # the reader waits: nothing was sent yet
        assert not waiting.done() and producer_ran == []
        async with asyncio.timeout(2):
            messages = await waiting
        assert [decode(m) for m in messages] == [
            ("activity", {"id": 1}),
            ("activity", {"id": 2}),
            ("inflight", {"operation": "remove", "id": "1"}),
        ]
        assert producer_ran == [2]
        assert len(second.get_nowait()) == 3


def test_without_a_running_loop_the_send_is_immediate() -> None:
    """A synchronous caller (no event loop): before-send callbacks run at once."""
    hub = EventsHub()
    ran: list[bool] = []
    with hub.subscribe() as sub:
        hub.before_send(lambda: ran.append(True))
        hub.publish("activity", {"id": 1})
        assert ran == [True]
        assert len(sub.get_nowait()) == 1


def test_wire_format_equals_json_dumps_twice_for_random_text() -> None:
    """Every character class the quoting can meet, in random strings, keys and nesting."""
    rng = random.Random(1)
    alphabet = ['"', "\\", "\n", "\x00", "\x1f", "a", "é", "😀", "\u2028", "/", "<", "\x7f", "u"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        data = {text: [text, {"k": text}], "n": 1.5}
        inner = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        envelope = json.dumps(
            {"type": "t", "data": inner}, separators=(",", ":"), ensure_ascii=False
        )
        assert encode_event("t", data) == b"event:message\ndata:" + envelope.encode() + b"\n\n"


def test_metrics_events_go_only_to_subscribers_that_want_them() -> None:
    hub = EventsHub()
    with hub.subscribe(metrics=False) as ui:
        assert hub.has_subscribers and not hub.wants_metrics
        with hub.subscribe() as old_ui:
            assert hub.wants_metrics
            hub.publish_activity(3, {"id": 3})
            assert [decode(m) for m in ui.get_nowait()] == [("activity", {"id": 3})]
            assert [decode(m) for m in old_ui.get_nowait()] == [
                ("activity", {"id": 3}),
                ("metrics", [{"id": 3}]),
            ]
        assert not hub.wants_metrics
