"""MQTT 3.1.1 conformance of the embedded broker and Mosquitto, one module per topic."""
