"""The `fleet` command: one module per command group (`cli/main.py` assembles them). The CLI
is the one package that imports broker, controller and device alike; those meet only in
`schemas/` and `config/`."""
