"""The controller's business logic: presence, task lifecycle and broadcasts.

Services take a SQLAlchemy `Session` (and a `Publisher` where they send MQTT messages), raise
`ServiceError`s the REST layer turns into 4xx bodies, and commit their own work.
"""
