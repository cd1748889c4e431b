"""The browser a device drives for login, upload and chat tasks: finding it, one profile per
account, and sessions that are always closed."""
