"""The reference platform: a small local web site that behaves like a social platform (QR login
with an optional SMS code, video upload, direct messages) and records what it receives, so the
fleet's browser tasks can be shown and tested end to end without a real platform."""
