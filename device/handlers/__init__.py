"""Task handlers: the interface (`base`), the plug-in registry (`registry`) and the built-in
diagnostic task types (`diagnostics`)."""
