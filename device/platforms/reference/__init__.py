"""The adapter for the project's reference platform (`device.platforms.reference_site`)."""
