"""Every message shape of the fleet: MQTT payloads and REST bodies, defined once with pydantic.

Import from the submodules: `schemas.tasks` (task envelope and per-type parameters),
`schemas.events` (what devices report), `schemas.status` (birth and last will),
`schemas.api` (REST requests and responses) and `schemas.topics` (topic names).
"""
