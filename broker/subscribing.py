"""Subscriptions a connection cannot work without, retried until the broker grants them all.

A broker may refuse a subscription that its ACL allows: NATS serves an MQTT QoS 1
subscription with a JetStream consumer, and right after a node of the cluster dies creating
one times out (`Unable to add JetStream consumer … timeout`, SUBACK code 0x80), or the SUBACK
does not come at all for many seconds. A client that carries on anyway is deaf: a device that
announced itself online then never hears its tasks. `SubscriptionKeeper` subscribes again,
with backoff, to the topics refused or not answered, and tells its owner when every one is
granted (the device publishes its birth only then) and when one was refused.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

ANSWER_TIMEOUT = 20.0  # seconds a SUBACK may take before the subscription counts as refused


class SubscriptionKeeper:
    """Call `connected()` from `on_connect`, `suback()` from `on_subscribe`, `disconnected()`
    from `on_disconnect`. Callbacks run in paho's thread or a retry timer's thread."""

    def __init__(
        self, client: mqtt.Client, topics: Sequence[tuple[str, int]], logger: logging.Logger, *,
        on_granted: Callable[[], None], on_refused: Callable[[list[str]], None] | None = None,
        min_delay: float = 1.0, max_delay: float = 30.0, answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self._client = client
        self._topics = list(topics)
        self._log = logger
        self._on_granted = on_granted
        self._on_refused = on_refused
        self._min, self._max = min_delay, max(min_delay, max_delay)
        self._answer_timeout = answer_timeout
        self._lock = threading.Lock()
        self._generation = 0  # one per connection: a timer of an older one does nothing
        self._pending: list[tuple[str, int]] = []
        self._mid: int | None = None
        self._refusals = 0  # refused attempts in this episode (since the last grant of all)
        self._timer: threading.Timer | None = None
        self.granted = False

    def connected(self) -> None:
        with self._lock:
            self._generation += 1
            self._pending = list(self._topics)
            self.granted = False
            self._cancel_timer()
        self._subscribe(self._generation)

    def disconnected(self) -> None:
        with self._lock:
            self._generation += 1
            self._mid = None
            self.granted = False
            self._cancel_timer()

    def suback(self, mid: int, reason_codes: Sequence[ReasonCode]) -> bool:
        """Handle a SUBACK; False when it answers no subscription of this keeper."""
        with self._lock:
            if mid != self._mid:
                return False
            self._mid = None
            self._cancel_timer()
            sent = self._pending
            refused = [(topic, qos) for (topic, qos), code in zip(sent, reason_codes, strict=False) if code.is_failure]
            refused += sent[len(reason_codes):]  # a short SUBACK refuses the rest
            self._pending = refused
            generation = self._generation
        if refused:
            self._refused(generation, [topic for topic, _ in refused], "refused")
            return True
        with self._lock:
            episode, self._refusals = self._refusals, 0
            self.granted = True
        if episode:
            self._log.info("the broker granted every subscription after %d refused attempt(s)", episode)
        self._on_granted()
        return True

    def _subscribe(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or not self._pending:
                return
            _rc, mid = self._client.subscribe(self._pending)
            self._mid = mid
            self._timer = threading.Timer(self._answer_timeout, self._no_answer, (generation, mid))
            self._timer.daemon = True
            self._timer.start()

    def _no_answer(self, generation: int, mid: int) -> None:
        with self._lock:
            if generation != self._generation or mid != self._mid:
                return
            self._mid = None
            topics = [topic for topic, _ in self._pending]
        self._refused(generation, topics, f"not answered within {self._answer_timeout:.0f} s")

    def _refused(self, generation: int, topics: list[str], how: str) -> None:
        with self._lock:
            self._refusals += 1
            count = self._refusals
            wait = min(self._max, self._min * 2 ** (count - 1)) * random.uniform(0.5, 1.5)
            if generation == self._generation:
                self._timer = threading.Timer(wait, self._subscribe, (generation,))
                self._timer.daemon = True
                self._timer.start()
        if count == 1:
            self._log.error("the broker %s subscriptions to %s (check its ACL; a clustered broker that lost a node "
                            "refuses for a while): subscribing again until it grants them", how, ", ".join(topics))
        else:
            self._log.debug("subscriptions to %s %s again (attempt %d); retrying in %.1f s", ", ".join(topics), how,
                            count, wait)
        if self._on_refused is not None:
            self._on_refused(topics)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
