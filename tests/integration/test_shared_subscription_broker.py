"""What Mosquitto does with a shared subscription (`$share/<group>/…`) whose member is
SIGKILLed, with persistent (clean_session false) and with clean sessions: the measurement
behind FLEET_SHARED_SUBSCRIPTION_GROUP's choice of clean sessions
(docs/architecture.md#measured-facts-the-code-relies-on).

Two subscriber processes share `$share/g/t/#`; one is SIGKILLed; then 100 QoS 1 messages are
published, and again 100 after the broker has surely noticed the death. With persistent
sessions the dead member keeps receiving its turn (about half) into its stored session, lost
to the group until it comes back under the same client id; with clean sessions the survivor
gets everything published after the death.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.connection import BrokerAddress, create_client
from tests.harness import Broker, Process, wait_for

pytestmark = pytest.mark.integration

MEMBER = """
import sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, client_id, clean, out = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4]
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
sink = open(out, "a")
client.on_connect = lambda c, u, f, rc, p: c.subscribe("$share/g/t/#", 1)
client.on_subscribe = lambda *a: (sink.write("ready\\n"), sink.flush())
client.on_message = lambda c, u, m: (sink.write(m.payload.decode() + "\\n"), sink.flush())
client.connect("127.0.0.1", port, 5)
client.loop_forever()
"""

# How Mosquitto 2.0 logs a connection it dropped: the socket closed (a SIGKILL on loopback), it
# failed, or the keepalive ran out (a cut network).
DROPPED = ("Client {} closed its connection", "Socket error on client {}", "Client {} has exceeded timeout")


def _member(broker: Broker, name: str, clean: bool, work: Path) -> tuple[subprocess.Popen[bytes], Path]:
    out = work / f"{name}-{int(clean)}.txt"
    process = subprocess.Popen([sys.executable, "-c", MEMBER, str(broker.port), f"{name}-{int(clean)}", str(int(clean)),
                                str(out)])
    wait_for(lambda: out.exists() and "ready" in out.read_text(), 20, what=f"member {name} subscribed")
    return process, out


def _received(out: Path, first: int, count: int) -> int:
    numbers = [int(line) for line in out.read_text().split() if line.isdigit()]
    return sum(first <= n < first + count for n in numbers)


def _publish(broker: Broker, first: int, count: int) -> None:
    client = create_client(BrokerAddress.from_url(broker.url), f"publisher-{first}")
    client.connect("127.0.0.1", broker.port, 10)
    client.loop_start()
    for number in range(first, first + count):
        client.publish("t/x", str(number), qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("clean", [False, True], ids=["persistent", "clean"])
def test_killed_member_of_a_shared_subscription(clean: bool, tmp_path: Path, _processes: list[Process]) -> None:
    broker = Broker("mosquitto", tmp_path)
    _processes.append(broker.process)
    broker.start()
    dead, _ = _member(broker, "dead", clean, tmp_path)
    alive, survivor = _member(broker, "alive", clean, tmp_path)
    try:
        dead.kill()
        dead.wait(10)
        _publish(broker, 1000, 100)
        dead_id = f"dead-{int(clean)}"
        wait_for(lambda: any(line.format(dead_id) in broker.process.output() for line in DROPPED),
                 20, 0.1, "Mosquitto dropping the dead member's connection")
        _publish(broker, 2000, 100)
        wait_for(lambda: _received(survivor, 2000, 100) >= (100 if clean else 30), 20, what="the survivor's messages")
        time.sleep(1)  # nothing more is on its way
        got = _received(survivor, 1000, 100), _received(survivor, 2000, 100)
        print(f"\n[mosquitto] shared subscription, {'clean' if clean else 'persistent'} sessions, one member "
              f"SIGKILLed: survivor got {got[0]}/100 right after, {got[1]}/100 later")
        if clean:
            assert got == (100, 100), got
        else:  # the dead member's stored session keeps taking its turn
            assert got[0] < 80 and got[1] < 80, got
    finally:
        alive.kill()
        alive.wait(10)
