"""`fleet device install-service` / `uninstall-service`: the device daemon as an OS service.

One module per kind of service (`systemd.py`, `launchd.py`, `windows_task.py`), each turning a
`ServiceRequest` into a `ServicePlan` (the files to write, the commands that register and
unregister them); `common.py` holds what they share, above all `daemon_command`, the one place
that says which command line the service runs; `actions.py` carries a plan out (or prints it);
`config_file.py` checks or writes the daemon's TOML settings file; `commands.py` is the typer
layer. Shell-outs to systemctl, launchctl and schtasks live here, in the installer, never in
`device/`.
"""
