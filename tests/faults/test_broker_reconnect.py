"""A worker's broker connection lost while it holds unacknowledged messages.

When Redis goes away, Celery's consumer collects its connection (the transport lets
go of its client) and then closes it; with Kombu's stock Redis channel that close
tried to hand the held messages back through the missing client, and the
AttributeError stopped the whole worker instead of letting it reconnect
(shared/taskqueue.py ``RedisChannel``). The messages must still come back once Redis
is reachable again, after their visibility timeout."""

from __future__ import annotations

import time

from kombu import Connection, Exchange, Queue

from shared.taskqueue import RedisTransport
from tests.support.faults import PrivateRedis

QUEUE = Queue("reconnect", Exchange("reconnect", type="direct"), routing_key="reconnect")


def test_closing_a_channel_its_transport_let_go_of_keeps_the_worker_and_the_message(
    private_redis: PrivateRedis,
) -> None:
    options = {"visibility_timeout": 1}
    connection = Connection(private_redis.url, transport_options=options)
    assert isinstance(connection.transport, RedisTransport)
    with connection.Producer() as producer:
        producer.publish(
            {"n": 1}, exchange=QUEUE.exchange, routing_key="reconnect", declare=[QUEUE]
        )
    channel = connection.channel()
    held = QUEUE(channel).get(no_ack=False)
    assert held is not None and held.payload == {"n": 1}

    # Redis goes away with the message delivered and not acknowledged; the
    # connection is collected the way Celery's consumer does it, then closed.
    private_redis.stop()
    connection._do_close_transport()
    channel.close()  # raised AttributeError('... hostname') with the stock channel
    assert channel.closed

    # Redis comes back from its append-only file: the message was never lost, and
    # once its visibility timeout has run out it is delivered again.
    private_redis.start()
    with Connection(private_redis.url, transport_options=options) as again:
        time.sleep(1.5)
        consumer_channel = again.channel()
        consumer_channel.qos.restore_visible()
        redelivered = QUEUE(consumer_channel).get(no_ack=False)
        assert redelivered is not None and redelivered.payload == {"n": 1}
        redelivered.ack()
        assert QUEUE(consumer_channel).get(no_ack=False) is None
