"""The fleet controller: REST API, MQTT client, SQL persistence and the task lifecycle."""
