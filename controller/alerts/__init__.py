"""Alert webhooks (docs/architecture.md#alerts): rules in settings raise alerts from SQL
(`detect`), an outbox table keeps each alert once and its delivery state (`outbox`), and a
lease-guarded background loop signs and POSTs them with retries (`sender`, `runner`)."""
