"""RabbitMQ through pika: a topic exchange per topic, publisher confirms with mandatory routing,
the consumer queue `<topic>.consumer` (manual acks) with its dead-letter exchange and queue, and
a stream queue `<topic>.log` bound with `#` that `tail` reads without taking anything."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from edaenv.brokers import base
from edaenv.brokers import rabbitmq_topology as topology
from edaenv.errors import BrokerError
from edaenv.wire import Binding

# The CloudEvents protocol binding's header names.
BINDING = Binding("cloudEvents_", None)

MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # RabbitMQ's default max_message_size
CONFIRM_TIMEOUT = 15.0
WINDOW = 1000  # unconfirmed messages in flight
TAIL_QUIET = 0.5  # not following: the longest wait for a stream's news
CHUNK_BURST = 0.05  # a stream's last chunk arrives within this after its first message
PREFETCH = 500
TAKE_IDLE = 2.0  # removing dead letters: the longest wait for the queue's next message


class RabbitBroker:
    name = "rabbitmq"
    max_message_bytes = MAX_MESSAGE_BYTES

    def __init__(self, endpoint: base.Endpoint):
        parts = urlsplit(endpoint.url)
        self.url = f"{parts.hostname}:{parts.port or 5672}"
        self.timeout = endpoint.connect_timeout
        params = pika.URLParameters(endpoint.url)
        params.connection_attempts = 1
        params.socket_timeout = self.timeout
        params.stack_timeout = self.timeout
        params.blocked_connection_timeout = CONFIRM_TIMEOUT
        self.params = params
        self.connection = self._connect()
        self.exchanges: set[str] = set()
        self._confirming: BlockingChannel | None = None
        self._outstanding: dict[int, tuple[int, float]] = {}
        self._tag = 0
        self._acked: list[tuple[int, float]] = []
        self._nacked: list[int] = []
        self._returned: list[str] = []

    def _connect(self) -> pika.BlockingConnection:
        try:
            return pika.BlockingConnection(self.params)
        except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError):
            raise BrokerError(
                f"rabbitmq at {self.url} refused the credentials",
                hint="RABBITMQ_USER / RABBITMQ_PASSWORD in the scaffold's .env "
                "must be the broker's (or EDAENV_BROKER_URL's)",
            ) from None
        except (pika.exceptions.AMQPError, AMQPConnectorException):
            # AMQPConnectorStackTimeout: the socket opened, the handshake got no answer (a
            # paused or overloaded broker).
            raise self._unreachable() from None

    def _live(self) -> pika.BlockingConnection:
        """The connection, opened anew if the broker closed it or went away (a restart): pika
        does not reconnect by itself. Reading what arrived while no call ran notices that."""
        if self.connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPConnectionError):
                self.connection.process_data_events(time_limit=0)
        if not self.connection.is_open:
            self._confirming = None
            self.connection = self._connect()
        return self.connection

    def _unreachable(self) -> BrokerError:
        return base.unreachable("rabbitmq", self.url)

    def _broken(self, exc: Exception) -> BrokerError:
        if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
            return BrokerError(f"rabbitmq at {self.url} refused: {exc.reply_text}")
        return self._unreachable()

    # --- topology ------------------------------------------------------------------------------

    def _exists(self, kind: str, name: str) -> bool:
        """A passive declare: a missing one closes its channel, so it gets a channel of its own."""
        channel = self.connection.channel()
        try:
            if kind == "exchange":
                channel.exchange_declare(name, passive=True)
            else:
                channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise self._broken(exc) from None
        channel.close()
        return True

    def ensure_topology(self, topics: Sequence[str]) -> None:
        try:
            channel = self._live().channel()
            # The same lists the stack's definitions.json is rendered from.
            for topic in dict.fromkeys(topics):
                for exchange in topology.exchanges(topic):
                    channel.exchange_declare(exchange.name, exchange.type, durable=True)
                    self.exchanges.add(exchange.name)
                for queue in topology.queues(topic):
                    channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
                    channel.queue_bind(queue.name, queue.source, routing_key=queue.routing_key)
            channel.close()
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BrokerError(
                f"rabbitmq at {self.url} refused the topology: {exc.reply_text}",
                hint="a queue or exchange of that name exists with other "
                "settings: delete it (management UI) or `edaenv down -v`",
            ) from None
        except pika.exceptions.AMQPError as exc:
            raise self._broken(exc) from None

    # --- publish ---------------------------------------------------------------------------------

    def _channel(self) -> BlockingChannel:
        """The publishing channel in confirm mode. pika's BlockingChannel would wait for each
        confirm in turn; its underlying channel lets a window of confirms be in flight."""
        if self._confirming is None or not self._confirming.is_open:
            channel = self.connection.channel()
            ready: list[bool] = []
            channel._impl.confirm_delivery(
                ack_nack_callback=self._on_confirm, callback=lambda _frame: ready.append(True)
            )
            channel._impl.add_on_return_callback(self._on_return)
            deadline = time.monotonic() + self.timeout
            while not ready and time.monotonic() < deadline:
                self.connection.process_data_events(time_limit=0.05)
            if not ready:
                raise self._unreachable()
            self._confirming, self._tag = channel, 0
            self._outstanding.clear()
        return self._confirming

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        now = time.perf_counter()
        done = (
            [t for t in self._outstanding if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        nack = isinstance(method, pika.spec.Basic.Nack)
        for tag in done:
            index, sent = self._outstanding.pop(tag, (-1, now))
            if nack:
                self._nacked.append(index)
            else:
                self._acked.append((index, (now - sent) * 1000))

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self._returned.append(f"{method.exchange}/{method.routing_key}")

    def publish(self, messages: Sequence[base.Message]) -> list[base.Ack]:
        self._live()
        self._check(messages)
        try:
            channel = self._channel()
            publish = channel._impl.basic_publish
            pump = self.connection.process_data_events
            self._acked, self._nacked, self._returned = [], [], []
            clock = time.perf_counter
            for index, message in enumerate(messages):
                properties = pika.BasicProperties(
                    content_type=message.attributes.get("datacontenttype"),
                    message_id=message.attributes.get("id"),
                    delivery_mode=2,
                    headers=BINDING.headers(message.attributes, message.headers),
                )
                self._tag += 1
                self._outstanding[self._tag] = (index, clock())
                publish(message.topic, message.key, message.value, properties, mandatory=True)
                while len(self._outstanding) >= WINDOW:
                    pump(time_limit=0.01)
            deadline = time.monotonic() + CONFIRM_TIMEOUT
            pump(time_limit=0)
            while self._outstanding and time.monotonic() < deadline:
                pump(time_limit=0.01)
        except pika.exceptions.AMQPError as exc:
            self._confirming = None
            raise self._broken(exc) from None
        if self._outstanding:
            self._confirming = None
            raise BrokerError(
                f"{len(self._outstanding)} of {len(messages)} message(s) not "
                f"confirmed by rabbitmq at {self.url} within {CONFIRM_TIMEOUT:g}s"
            )
        if self._nacked:
            raise BrokerError(
                f"rabbitmq at {self.url} refused {len(self._nacked)} of "
                f"{len(messages)} message(s) (basic.nack)"
            )
        if self._returned:
            raise BrokerError(
                f"{len(self._returned)} message(s) unroutable: no queue bound to "
                f"{self._returned[0]}",
                hint="`edaenv up` or `edaenv publish` declares the queues of your "
                "contracts' topics",
            )
        # RabbitMQ keeps no message id: every confirmed message is stored and delivered.
        latencies = dict(self._acked)
        return [
            base.Ack(
                position={"exchange": message.topic, "routing_key": message.key},
                latency_ms=latencies.get(index, 0.0),
            )
            for index, message in enumerate(messages)
        ]

    def _check(self, messages: Sequence[base.Message]) -> None:
        for message in messages:
            size = len(message.value) + sum(len(k) + len(v) for k, v in message.attributes.items())
            if size > self.max_message_bytes:
                raise BrokerError(
                    f"message of {size} bytes for key '{message.key}' is larger "
                    f"than rabbitmq accepts ({self.max_message_bytes} bytes)"
                )
        for exchange in sorted({m.topic for m in messages} - self.exchanges):
            if not self._exists("exchange", exchange):
                raise BrokerError(
                    f"exchange '{exchange}' does not exist on rabbitmq at {self.url}",
                    hint="`edaenv up` and `edaenv publish` declare the exchanges "
                    "of your contracts' topics (events/*.schema.json)",
                )
            self.exchanges.add(exchange)

    # --- read ------------------------------------------------------------------------------------

    def _consume(
        self,
        queue: str,
        prefetch: int,
        arguments: dict[str, Any] | None = None,
    ) -> tuple[BlockingChannel, deque[tuple[Any, Any, bytes]]]:
        channel = self.connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        buffer: deque[tuple[Any, Any, bytes]] = deque()
        channel.basic_consume(
            queue,
            lambda _ch, method, props, body: buffer.append((method, props, body)),
            arguments=arguments,
        )
        return channel, buffer

    def tail(
        self, topic: str, *, from_beginning: bool, follow: bool, idle_timeout: float
    ) -> Iterator[base.Delivery]:
        log = topology.log_name(topic)
        self._live()
        try:
            if self._exists("queue", log):
                yield from self._tail_stream(log, topic, from_beginning, follow, idle_timeout)
            elif self._exists("queue", topic):
                yield from self._browse(topic, idle_timeout)
            else:
                raise BrokerError(
                    f"no stream '{log}' nor queue '{topic}' on rabbitmq at {self.url}",
                    hint="`edaenv up` and `edaenv publish` declare the topology "
                    "of your contracts' topics (events/*.schema.json)",
                )
        except pika.exceptions.AMQPError as exc:
            raise self._broken(exc) from None

    def _tail_stream(
        self, log: str, topic: str, from_beginning: bool, follow: bool, idle_timeout: float
    ) -> Iterator[base.Delivery]:
        """Reading a stream queue takes nothing: the acks below only grant the consumer credit."""
        if not (from_beginning or follow):
            return
        end = None if follow else self._stream_end(log, idle_timeout)
        if not follow and end is None:
            return
        offset = "first" if from_beginning else "next"
        channel, buffer = self._consume(log, 1000, {"x-stream-offset": offset})
        quiet = min(idle_timeout, TAIL_QUIET)
        try:
            last = time.monotonic()
            while follow or time.monotonic() - last < quiet:
                self.connection.process_data_events(time_limit=0.05)
                if not buffer:
                    continue
                last = time.monotonic()
                while buffer:
                    method, props, body = buffer.popleft()
                    headers = dict(props.headers or {})
                    at = int(headers.pop("x-stream-offset", -1))
                    if end is not None and at > end:
                        return
                    position = {"queue": log, "offset": at}
                    yield _delivery(topic, method, props, body, headers, position)
                    if end is not None and at == end:
                        return
                    if method.delivery_tag % 200 == 0 or not buffer:
                        # Credit for the stream consumer before it runs dry; takes nothing.
                        channel.basic_ack(method.delivery_tag, multiple=True)
        finally:
            _stop_stream_reader(channel)

    def _stream_end(self, log: str, wait: float) -> int | None:
        """The offset of the stream's last message now; None when it is empty. A stream tells
        no consumer where it ends, but read from `last` it delivers its last chunk at once."""
        channel, buffer = self._consume(log, 1000, {"x-stream-offset": "last"})
        end = None
        deadline = time.monotonic() + min(wait, TAIL_QUIET)
        try:
            while time.monotonic() < deadline:
                self.connection.process_data_events(time_limit=0.01)
                while buffer:
                    _method, props, _body = buffer.popleft()
                    at = int((props.headers or {}).get("x-stream-offset", -1))
                    if end is None:
                        deadline = time.monotonic() + CHUNK_BURST
                    end = at if end is None else max(end, at)
        finally:
            _stop_stream_reader(channel)
        return end

    def _browse(self, queue: str, idle_timeout: float) -> Iterator[base.Delivery]:
        """A classic queue (e.g. the dead letters) read without acks: closing the channel puts
        every message back, in order."""
        channel = self.connection.channel()
        count = channel.queue_declare(queue, passive=True).method.message_count
        channel.close()
        if not count:
            return
        channel, buffer = self._consume(queue, count)
        seen = 0
        try:
            last = time.monotonic()
            while seen < count and time.monotonic() - last < idle_timeout:
                self.connection.process_data_events(time_limit=0.05)
                while buffer and seen < count:
                    method, props, body = buffer.popleft()
                    seen, last = seen + 1, time.monotonic()
                    headers = dict(props.headers or {})
                    yield _delivery(
                        queue, method, props, body, headers, {"queue": queue, "index": seen - 1}
                    )
        finally:
            if channel.is_open:
                channel.close()

    def subscribe(self, topic: str, group: str) -> RabbitSubscription:
        """Every subscriber of a topic shares its queue `<topic>.consumer` (competing
        consumers); the group name is not needed to find it."""
        queue = topology.queue_name(topic)
        self._live()
        if not self._exists("queue", queue):
            raise BrokerError(
                f"queue '{queue}' does not exist on rabbitmq at {self.url}",
                hint="`edaenv up` declares the queues of your contracts' topics",
            )
        return RabbitSubscription(self, topic, queue)

    def publish_dead_letter(
        self, topic: str, delivery: base.Delivery, headers: dict[str, str]
    ) -> base.Ack:
        return self.publish([base.dead_letter(delivery, topology.dlx_name(topic), headers)])[0]

    def remove_dead_letters(self, letters: Sequence[base.Delivery]) -> list[base.Delivery]:
        """A queue removes a message only when a consumer acknowledges it: take each queue's
        messages, acknowledge those that are the letters given (same key, body, attributes and
        headers; a queue keeps no other identity), and close the channel, which puts the others
        back in their place."""
        removed: list[base.Delivery] = []
        self._live()
        by_queue: dict[str, list[base.Delivery]] = {}
        for letter in letters:
            by_queue.setdefault(letter.position["queue"], []).append(letter)
        try:
            for queue, chosen in by_queue.items():
                removed += self._take(queue, chosen)
        except pika.exceptions.AMQPError as exc:
            raise self._broken(exc) from None
        return removed

    def _take(self, queue: str, letters: Sequence[base.Delivery]) -> list[base.Delivery]:
        wanted: dict[tuple[Any, ...], list[base.Delivery]] = {}
        for letter in letters:
            wanted.setdefault(_identity(letter), []).append(letter)
        removed: list[base.Delivery] = []
        if not self._exists("queue", queue):
            return removed
        channel = self.connection.channel()
        count = channel.queue_declare(queue, passive=True).method.message_count
        channel.close()
        if not count:
            return removed
        channel, buffer = self._consume(queue, min(count, 65535))  # prefetch is 16 bits
        seen = 0
        try:
            last = time.monotonic()
            while (
                seen < count and len(removed) < len(letters) and time.monotonic() - last < TAKE_IDLE
            ):
                self.connection.process_data_events(time_limit=0.05)
                while buffer:
                    method, props, body = buffer.popleft()
                    seen, last = seen + 1, time.monotonic()
                    headers = dict(props.headers or {})
                    letter = _delivery(queue, method, props, body, headers, {})
                    match = wanted.get(_identity(letter))
                    if match:
                        channel.basic_ack(method.delivery_tag)
                        removed.append(match.pop())
            # The acks must reach the broker before the close returns the others.
            self.connection.process_data_events(time_limit=0)
        finally:
            if channel.is_open:
                channel.close()
        return removed

    def close(self) -> None:
        if self.connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self.connection.close()


class RabbitSubscription:
    """A consumer of the topic's queue. When the broker went away (a restart), the next fetch
    consumes again on a new connection; what was delivered and not acknowledged before comes
    again, and acks of those deliveries are ignored: their tags named the lost channel."""

    def __init__(self, broker: RabbitBroker, topic: str, queue: str):
        self.broker, self.topic, self.queue = broker, topic, queue
        self.channel, self.buffer = broker._consume(queue, PREFETCH)
        self.unacked: dict[int, dict[str, Any]] = {}  # delivery tag -> its delivery's position

    def fetch(self, max_messages: int, timeout: float) -> list[base.Delivery]:
        deadline = time.monotonic() + timeout
        try:
            if not self.channel.is_open:
                self.broker._live()
                self.channel, self.buffer = self.broker._consume(self.queue, PREFETCH)
                self.unacked.clear()
            pump = self.broker.connection.process_data_events
            pump(time_limit=0)
            # pika returns from a wait as soon as a delivery is dispatched: an idle consumer
            # wakes once per timeout, not every few milliseconds.
            while not self.buffer and time.monotonic() < deadline:
                pump(time_limit=max(0.0, deadline - time.monotonic()))
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(f"rabbitmq: the consumer lost its channel ({exc})") from None
        deliveries: list[base.Delivery] = []
        while self.buffer and len(deliveries) < max_messages:
            method, props, body = self.buffer.popleft()
            position = {
                "queue": self.queue,
                "delivery_tag": method.delivery_tag,
                "redelivered": method.redelivered,
            }
            self.unacked[method.delivery_tag] = position
            deliveries.append(
                _delivery(self.topic, method, props, body, dict(props.headers or {}), position)
            )
        return deliveries

    def ack(self, delivery: base.Delivery) -> None:
        tag = delivery.position["delivery_tag"]
        if self.unacked.get(tag) is not delivery.position:
            return  # delivered on a channel since lost: the broker delivers it again
        del self.unacked[tag]
        # A channel lost now: the broker delivers it again.
        with contextlib.suppress(pika.exceptions.AMQPError):
            self.channel.basic_ack(tag)

    def close(self) -> None:
        if self.channel.is_open:
            self.channel.close()


def dead_letter_source(topic: str) -> str:
    """What `tail` reads a topic's dead letters from: its dead-letter queue."""
    return topology.dlq_name(topic)


def _identity(letter: base.Delivery) -> tuple[Any, ...]:
    return (
        letter.key,
        letter.value,
        tuple(sorted(letter.attributes.items())),
        tuple(sorted((k, str(v)) for k, v in letter.headers.items())),
    )


def _stop_stream_reader(channel: BlockingChannel) -> None:
    """Cancel a stream consumer and close its channel. pika rejects what it received but did
    not hand over when a manual-ack consumer is cancelled, and a stream answers a reject by
    closing the connection: so the consumer is cancelled as the auto-ack consumer it
    effectively is (acks on a stream only grant credit, and nothing is left to take)."""
    if not channel.is_open:
        return
    for tag, info in list(channel._consumer_infos.items()):
        info.auto_ack = True
        channel._impl._consumers_with_noack.add(tag)
        channel.basic_cancel(tag)
    channel.close()


def _delivery(
    topic: str,
    method: Any,
    props: Any,
    body: bytes,
    headers: dict[str, Any],
    position: dict[str, Any],
) -> base.Delivery:
    attributes, other = BINDING.split(headers.items(), props.content_type)
    return base.Delivery(
        topic=method.exchange or topic,
        key=method.routing_key,
        value=body,
        attributes=attributes,
        headers=other,
        position=position,
    )
