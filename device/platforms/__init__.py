"""Social platform adapters: the interface, the registry, and the platforms shipped with the project."""
