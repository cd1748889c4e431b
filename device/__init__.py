"""The device daemon: runs on each PC, keeps presence on the broker, executes tasks exactly once.

Entry points: `device.daemon.DeviceDaemon` / `device.daemon.run_device`. Task types are
plug-ins (`device.handlers`), loaded from the `fleet.task_handlers` entry-point group.
"""
