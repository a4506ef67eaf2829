"""Standalone entry point: ``python -m target_service serve|feature-store|train``.

The target is deployable without the framework (a container runs exactly this), so this
uses argparse and imports nothing from the faultdrill packages. ``faultdrill target …``
offers the same commands with richer help.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m target_service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the inference server")
    serve.add_argument("--port", type=int)
    serve.add_argument("--admin-port", type=int)
    store = sub.add_parser("feature-store", help="run the feature store")
    store.add_argument("--port", type=int)
    sub.add_parser("train", help="train/publish the default model versions if missing")
    args = parser.parse_args(argv)

    if args.command == "serve":
        from .config import TargetSettings
        from .server import exit_process, serve_target

        overrides = {k: v for k, v in (("port", args.port), ("admin_port", args.admin_port)) if v is not None}
        exit_process(serve_target(TargetSettings(**overrides)))  # its port is closed: no slow teardown
    if args.command == "feature-store":
        from .config import FeatureStoreSettings
        from .feature_store import serve_feature_store
        from .server import exit_process

        fs_overrides = {"port": args.port} if args.port is not None else {}
        exit_process(serve_feature_store(FeatureStoreSettings(**fs_overrides)))
    from .config import TargetSettings
    from .registry import ModelRegistry

    for manifest in ModelRegistry(TargetSettings().model_registry).ensure_defaults():
        print(f"{manifest.name} v{manifest.version} sha256={manifest.sha256[:12]} {manifest.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
