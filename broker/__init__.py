"""What the fleet needs from an MQTT broker: the embedded amqtt broker (`broker.embedded`),
client connections to any broker (`broker.connection`) and Mosquitto configuration
(`broker.mosquitto`). Importing this package loads nothing heavy."""
