"""`python -m device.platforms.reference.site --port 8090 --state-dir DIR`: serve the reference site."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from device.platforms.reference.site.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the reference social platform (for demos and tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--state-dir", type=Path, default=Path("reference-site"), help="where uploads and records go")
    args = parser.parse_args()
    print(f"reference platform on http://{args.host}:{args.port} (records at /_records)", flush=True)
    uvicorn.run(create_app(args.state_dir), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
