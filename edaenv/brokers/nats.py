"""NATS JetStream through nats-py: a stream per topic (subjects `<topic>.<key>`), publish with a
window of PubAcks in flight and `Nats-Msg-Id` de-duplication, durable pull consumers, and tail
by an ephemeral consumer deleted afterwards. asyncio stays inside: the Protocol is synchronous."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from edaenv.brokers import base
from edaenv.errors import BrokerError
from edaenv.wire import Binding

# The CloudEvents protocol binding's header names.
BINDING = Binding("ce-", "content-type")

T = TypeVar("T")
ACK_TIMEOUT = 15.0
WINDOW = 1000  # PubAcks in flight
FETCH = 500
RECONNECT_WAIT = 0.5  # between attempts to reach a broker that went away
MSG_ID = "Nats-Msg-Id"
MSG_DELETE_FAILED = 10057  # JetStream's error code for a message that is not (or no longer) there


class NatsBroker:
    name = "nats"

    def __init__(self, endpoint: base.Endpoint):
        parts = urlsplit(endpoint.url)
        self.url = f"{parts.hostname}:{parts.port or 4222}"
        self.timeout = endpoint.connect_timeout
        left = base.probe(
            "nats", self.url, [(parts.hostname or "localhost", parts.port or 4222)], self.timeout
        )
        self.loop = asyncio.new_event_loop()
        self.streams: set[str] = set()
        self.errors: list[Exception] = []

        async def note(exc: Exception) -> None:
            self.errors.append(exc)
            del self.errors[:-20]  # a broker away for long: one per attempt to reconnect

        try:
            # nats-py retries a refused connection without end, whatever its options say.
            self.nc = self._run(
                nats.connect(
                    _without_empty_credentials(endpoint.url),
                    connect_timeout=left,
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                    error_cb=note,
                    pending_size=8 * 1024 * 1024,
                ),
                timeout=left,
            )
        except (TimeoutError, OSError, nats.errors.Error):
            self._shutdown()
            if any("authorization" in str(e).lower() for e in self.errors):
                raise BrokerError(
                    f"nats at {self.url} refused the credentials",
                    hint="NATS_USER / NATS_PASSWORD in the scaffold's .env must be "
                    "the broker's (or EDAENV_BROKER_URL's)",
                ) from None
            raise self._unreachable() from None
        # Connected: now ride out a broker restart instead of failing for good. nats-py then
        # reconnects in the background, keeps what is published meanwhile and resubscribes;
        # each call's own timeout bounds how long it waits for that.
        self.nc.options.update(
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT
        )
        self.js = self.nc.jetstream(publish_async_max_pending=WINDOW)
        self.max_message_bytes = self.nc.max_payload

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the adapter's loop. Ctrl-C cancels it and raises
        KeyboardInterrupt here: left to itself, nats-py's tasks can swallow the interrupt."""
        if timeout is not None:
            coroutine = asyncio.wait_for(coroutine, timeout)
        task = self.loop.create_task(coroutine)
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        ):  # another thread, or Ctrl-C is someone else's (seed stops after the window)
            return self.loop.run_until_complete(task)
        interrupted: list[bool] = []

        def interrupt() -> None:
            interrupted.append(True)
            task.cancel()

        self.loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            return self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            self.loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _unreachable(self) -> BrokerError:
        return base.unreachable("nats", self.url)

    def _missing(self, what: str) -> BrokerError:
        return BrokerError(
            f"no JetStream stream holds '{what}' on nats at {self.url}",
            hint="`edaenv up` and `edaenv publish` create the streams of your "
            "contracts' topics (events/*.schema.json)",
        )

    # --- topology ------------------------------------------------------------------------------

    def ensure_topology(self, topics: Sequence[str]) -> None:
        async def ensure() -> None:
            for topic in dict.fromkeys(topics):
                for stream, subject in (
                    (nats_stream(topic), f"{topic}.>"),
                    (nats_dlq_stream(topic), nats_dlq_subject(topic)),
                ):
                    try:
                        await self.js.stream_info(stream)
                    except nats.js.errors.NotFoundError:
                        await self.js.add_stream(
                            StreamConfig(name=stream, subjects=[subject], duplicate_window=120.0)
                        )
                    self.streams.add(stream)

        self._call(ensure(), "create the streams")

    def _call(self, coroutine: Coroutine[Any, Any, T], doing: str) -> T:
        try:
            return self._run(coroutine, timeout=ACK_TIMEOUT)
        except nats.js.errors.APIError as exc:
            raise BrokerError(
                f"nats at {self.url} refused to {doing}: {exc.description}",
                hint="a stream of that name may exist with other subjects: "
                "`edaenv down -v` resets the stack",
            ) from None
        except (TimeoutError, nats.errors.Error):
            raise self._unreachable() from None

    # --- publish ---------------------------------------------------------------------------------

    def publish(self, messages: Sequence[base.Message]) -> list[base.Ack]:
        self._check(messages)
        return self._call(self._publish(messages), "publish")

    async def _publish(self, messages: Sequence[base.Message]) -> list[base.Ack]:
        # The loop is idle between calls: let the client read what came meanwhile, so that a
        # broker gone away (restarted) is noticed, and reconnected to, before anything is sent
        # into its dead connection.
        for _ in range(5):
            await asyncio.sleep(0)
        count = len(messages)
        acks: list[base.Ack | None] = [None] * count
        failures: list[BaseException] = []
        clock = time.perf_counter
        pending = []

        def done(index: int, sent: float, future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                failures.append(TimeoutError())
                return
            error = future.exception()
            if error is not None:
                failures.append(error)
                return
            ack = future.result()
            acks[index] = base.Ack(
                position={"stream": ack.stream, "seq": ack.seq},
                latency_ms=(clock() - sent) * 1000,
                duplicate=bool(ack.duplicate),
            )

        publish = self.js.publish_async
        for index, message in enumerate(messages):
            headers = BINDING.headers(message.attributes, message.headers)
            dedup_id = message.dedup_id or message.attributes.get("id")
            if dedup_id:
                headers[MSG_ID] = dedup_id
            sent = clock()
            future = await publish(
                nats_subject(message.topic, message.key), message.value, headers=headers
            )
            future.add_done_callback(partial(done, index, sent))
            pending.append(future)
        await asyncio.wait(pending, timeout=ACK_TIMEOUT)
        unacked = sum(1 for f in pending if not f.done())
        if failures or unacked:
            error = failures[0] if failures else None
            if isinstance(error, nats.js.errors.NoStreamResponseError):
                raise self._missing(messages[0].topic)
            if not self.nc.is_connected:  # gone, and not back within ACK_TIMEOUT
                raise self._unreachable()
            raise BrokerError(
                f"{len(failures) + unacked} of {count} message(s) not acknowledged "
                f"by nats at {self.url}: {error or 'no PubAck in time'}"
            )
        return [ack for ack in acks if ack is not None]

    def _check(self, messages: Sequence[base.Message]) -> None:
        limit = self.max_message_bytes
        for message in messages:
            if len(message.value) + 8192 < limit:  # headers of a few KiB are the rule
                continue
            headers = (*message.attributes.items(), *message.headers.items())
            size = len(message.value) + sum(len(k) + len(v) + 4 for k, v in headers) + 64
            if size > limit:
                raise BrokerError(
                    f"message of {size} bytes for key '{message.key}' is larger "
                    f"than nats accepts (max_payload {self.max_message_bytes})"
                )
        for topic in sorted({m.topic for m in messages}):
            stream = nats_stream(topic)
            if stream not in self.streams:
                self._stream_of(f"{topic}.>")
                self.streams.add(stream)

    def _stream_of(self, subject: str) -> str:
        try:
            return self._run(self.js.find_stream_name_by_subject(subject), timeout=self.timeout)
        except nats.js.errors.NotFoundError:
            raise self._missing(subject) from None
        except (TimeoutError, nats.errors.Error):
            raise self._unreachable() from None

    # --- read ------------------------------------------------------------------------------------

    def tail(
        self, topic: str, *, from_beginning: bool, follow: bool, idle_timeout: float
    ) -> Iterator[base.Delivery]:
        subject = topic if topic.endswith(">") or "*" in topic else f"{topic}.>"
        prefix = subject.rsplit(".", 1)[0]
        stream = self._stream_of(subject)
        if not (from_beginning or follow):
            return
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            filter_subject=subject,
            deliver_policy=DeliverPolicy.ALL if from_beginning else DeliverPolicy.NEW,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        try:
            sub = self._run(
                self.js.pull_subscribe(subject, stream=stream, config=config), timeout=self.timeout
            )
            info = self._run(sub.consumer_info(), timeout=self.timeout)
        except (TimeoutError, nats.errors.Error):
            raise self._unreachable() from None
        remaining = info.num_pending or 0
        try:
            idle_since = time.monotonic()
            while follow or (remaining > 0 and time.monotonic() - idle_since < idle_timeout):
                try:
                    batch = self._run(sub.fetch(FETCH, timeout=0.5))
                except TimeoutError:  # nats-py raises its own or asyncio's
                    continue
                idle_since = time.monotonic()
                remaining -= len(batch)
                for msg in batch:
                    yield _delivery(msg, prefix)
        finally:
            # An ephemeral consumer outlives its subscription for inactive_threshold: delete it
            # now, so tail leaves nothing behind.
            try:
                self._run(self.js.delete_consumer(stream, info.name), timeout=self.timeout)
                self._run(sub.unsubscribe(), timeout=self.timeout)
            except (TimeoutError, nats.errors.Error):
                pass

    def subscribe(self, topic: str, group: str) -> NatsSubscription:
        subject = f"{topic}.>"
        stream = self._stream_of(subject)
        durable = re.sub(r"[^A-Za-z0-9_-]", "_", group)
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30.0,
            max_ack_pending=10_000,
            filter_subject=subject,
        )
        sub = self._call(
            self.js.pull_subscribe(subject, durable=durable, stream=stream, config=config),
            "create a durable consumer",
        )
        return NatsSubscription(self, sub, topic)

    def publish_dead_letter(
        self, topic: str, delivery: base.Delivery, headers: dict[str, str]
    ) -> base.Ack:
        # No Nats-Msg-Id: every failure is a letter of its own.
        all_headers = BINDING.headers(delivery.attributes, {**delivery.headers, **headers})
        sent = time.perf_counter()
        ack = self._call(
            self.js.publish(
                nats_dlq_subject(topic, _token(delivery.key)),
                delivery.value,
                headers=all_headers,
                timeout=ACK_TIMEOUT,
            ),
            "publish the dead letter",
        )
        return base.Ack(
            position={"stream": ack.stream, "seq": ack.seq},
            latency_ms=(time.perf_counter() - sent) * 1000,
        )

    def remove_dead_letters(self, letters: Sequence[base.Delivery]) -> list[base.Delivery]:
        async def delete() -> list[base.Delivery]:
            removed = []
            for letter in letters:
                position = letter.position
                try:
                    if await self.js.delete_msg(position["stream"], position["seq"]):
                        removed.append(letter)
                except nats.js.errors.APIError as exc:
                    if exc.err_code != MSG_DELETE_FAILED:
                        raise
                    # Gone already: removed meanwhile, by another purge or replay.
            return removed

        return self._call(delete(), "delete the dead letters")

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self._run(self.nc.close(), timeout=self.timeout)
        except (TimeoutError, nats.errors.Error):
            pass
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Cancel what the client left running (a failed connect leaves its retries), then
        close the loop: no 'Task was destroyed' noise at exit."""

        async def cancel_all() -> None:
            for _ in range(3):  # a cancelled task may start another (the client's own close)
                tasks = asyncio.all_tasks() - {asyncio.current_task()}
                if not tasks:
                    return
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        self.loop.run_until_complete(cancel_all())
        self.loop.close()


class NatsSubscription:
    def __init__(self, broker: NatsBroker, sub: Any, topic: str):
        self.broker, self.sub, self.topic = broker, sub, topic
        self.unacked: dict[int, Msg] = {}

    def fetch(self, max_messages: int, timeout: float) -> list[base.Delivery]:
        try:
            batch = self.broker._run(self.sub.fetch(max_messages, timeout=timeout))
        except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from an empty pull fetch
            return []
        except nats.errors.Error as exc:
            raise BrokerError(f"nats at {self.broker.url}: {exc}") from None
        deliveries = []
        for msg in batch:
            delivery = _delivery(msg, self.topic)
            self.unacked[delivery.position["seq"]] = msg
            deliveries.append(delivery)
        return deliveries

    def ack(self, delivery: base.Delivery) -> None:
        msg = self.unacked.pop(delivery.position["seq"], None)
        if msg is not None:
            self.broker._run(msg.ack())

    def close(self) -> None:
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            self.broker._run(self.sub.unsubscribe(), timeout=self.broker.timeout)


def _delivery(msg: Msg, prefix: str) -> base.Delivery:
    headers = dict(msg.headers or {})
    headers.pop(MSG_ID, None)
    attributes, other = BINDING.split(headers.items())
    meta = msg.metadata
    key = msg.subject[len(prefix) + 1 :] if msg.subject.startswith(prefix + ".") else msg.subject
    return base.Delivery(
        topic=prefix,
        key=key,
        value=msg.data,
        attributes=attributes,
        headers=other,
        position={"stream": meta.stream, "seq": meta.sequence.stream},
    )


def dead_letter_source(topic: str) -> str:
    """What `tail` reads a topic's dead letters from: the subjects of its DLQ stream."""
    return nats_dlq_subject(topic)


def _token(key: str) -> str:
    return re.sub(r"[.*> ]", "_", key)


def _without_empty_credentials(url: str) -> str:
    """`nats://:@host:4222` (empty user and password in .env) means no credentials."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# --- the JetStream objects behind a topic ----------------------------------------------------


def nats_stream(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", topic).upper()


def nats_subject(topic: str, key: str) -> str:
    """The aggregate id is the last subject token, so per-subject order is per-aggregate order."""
    return f"{topic}.{re.sub(r'[.*> ]', '_', key)}"


def nats_dlq_stream(topic: str) -> str:
    return f"DLQ_{nats_stream(topic)}"


def nats_dlq_subject(topic: str, key: str = ">") -> str:
    return f"dlq.{topic}.{key}"
