"""What the device unit modules share: the id of the device they test as."""

from __future__ import annotations

DEVICE = "pc-01"
