"""The ``faultdrill`` command line (typer + rich).

Heavy modules (torch, uvicorn, starlette) are imported inside the commands that need them,
so ``faultdrill --help`` starts in a fraction of a second.

Exit codes: 0 success, 1 failure (an expectation failed, a service did not come up),
2 bad input (a located message, never a traceback), 3 aborted/halted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from faultdrill import __version__
from faultdrill.alerts_cli import alerts_app
from faultdrill.deploy_cli import deploy_app
from faultdrill.export_cli import export_app
from faultdrill.faults_cli import faults_app, rollback_command
from faultdrill.gameday_cli import gameday_app
from faultdrill.history_cli import history_app
from faultdrill.report_cli import report_command
from faultdrill.run_cli import run_command
from faultdrill.runbook_cli import runbook_app
from faultdrill.score_cli import score_command
from faultdrill.spec_cli import schema_command, validate_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="faultdrill",
    help="Chaos engineering and game days for GPU inference services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
target_app = typer.Typer(help="The bundled GPU inference target and its feature store.", no_args_is_help=True)
app.add_typer(target_app, name="target")
app.add_typer(faults_app, name="faults")
app.add_typer(alerts_app, name="alerts")
app.add_typer(export_app, name="export")
app.add_typer(runbook_app, name="runbook")
app.add_typer(gameday_app, name="gameday")
app.add_typer(history_app, name="history")
app.add_typer(deploy_app, name="deploy")
app.command("rollback")(rollback_command)
app.command("validate")(validate_command)
app.command("schema")(schema_command)
app.command("run")(run_command)
app.command("report")(report_command)
app.command("score")(score_command)


def _fail_input(message: str) -> None:
    """Bad input: one readable line on stderr, exit 2."""
    typer.echo(f"faultdrill: error: {message}", err=True)
    raise typer.Exit(2)


def _settings(cls: Any, overrides: dict[str, Any], env_prefix: str) -> Any:
    """Build a settings object; env or option mistakes become located messages, exit 2."""
    from pydantic import ValidationError

    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            source = f"--{field.replace('_', '-')}" if field in overrides and overrides[field] is not None \
                else f"environment variable {env_prefix}{field.upper()}"  # fmt: skip
            lines.append(f"{source}: {err['msg']} (got {err.get('input')!r})")
        _fail_input("invalid configuration:\n  " + "\n  ".join(lines))


@app.command()
def version() -> None:
    """Print faultdrill's version."""
    typer.echo(__version__)


@target_app.command("serve")
def target_serve(
    port: Annotated[int | None, typer.Option(help="Inference API port [env FAULTDRILL_PORT].")] = None,
    admin_port: Annotated[
        int | None, typer.Option(help="Chaos admin API port on 127.0.0.1 [FAULTDRILL_ADMIN_PORT].")
    ] = None,
    model: Annotated[str | None, typer.Option(help="digits or heavy [FAULTDRILL_MODEL].")] = None,
    model_version: Annotated[str | None, typer.Option(help="Registry version [FAULTDRILL_MODEL_VERSION].")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [FAULTDRILL_DEVICE].")] = None,
    feature_store_url: Annotated[
        str | None, typer.Option(help="Feature store base URL [FAULTDRILL_FEATURE_STORE_URL].")
    ] = None,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle for the feature store [FAULTDRILL_CA_FILE].")] = None,
    misconfig: Annotated[
        list[str] | None, typer.Option(help="Misconfiguration profile (repeatable) [FAULTDRILL_MISCONFIGURATIONS].")
    ] = None,
) -> None:
    """Run the inference server (Open Inference Protocol v2) until SIGTERM."""
    from faultdrill.target_service.config import TargetSettings

    settings = _settings(
        TargetSettings,
        {
            "port": port, "admin_port": admin_port, "model": model, "model_version": model_version,
            "device": device, "feature_store_url": feature_store_url, "ca_file": ca_file,
            "misconfigurations": misconfig or None,
        },
        "FAULTDRILL_",
    )  # fmt: skip
    from faultdrill.target_service.server import exit_process, serve_target

    exit_process(serve_target(settings))  # its port is closed: skip the interpreter's slow teardown


@target_app.command("feature-store")
def target_feature_store(
    port: Annotated[int | None, typer.Option(help="Port [env FAULTDRILL_FS_PORT].")] = None,
    cert: Annotated[Path | None, typer.Option(help="Server certificate [FAULTDRILL_FS_TLS_CERT_FILE].")] = None,
    key: Annotated[Path | None, typer.Option(help="Server key [FAULTDRILL_FS_TLS_KEY_FILE].")] = None,
) -> None:
    """Run the feature store (HTTPS when a certificate is given) until SIGTERM."""
    from faultdrill.target_service.config import FeatureStoreSettings

    settings = _settings(
        FeatureStoreSettings, {"port": port, "tls_cert_file": cert, "tls_key_file": key}, "FAULTDRILL_FS_"
    )
    from faultdrill.target_service.feature_store import serve_feature_store

    raise typer.Exit(serve_feature_store(settings))


@target_app.command("train")
def target_train(
    registry: Annotated[Path | None, typer.Option(help="Model registry [FAULTDRILL_MODEL_REGISTRY].")] = None,
) -> None:
    """Train and publish the default model versions if missing (deterministic, no downloads)."""
    from faultdrill.target_service.config import TargetSettings

    settings = _settings(TargetSettings, {"model_registry": registry}, "FAULTDRILL_")
    from faultdrill.target_service.registry import ModelRegistry

    for m in ModelRegistry(settings.model_registry).ensure_defaults():
        acc = m.metrics.get("accuracy")
        extra = f" accuracy={acc:.4f}" if isinstance(acc, float) else ""
        typer.echo(f"{m.name} v{m.version} sha256={m.sha256[:16]}{extra}  ({settings.model_registry})")


@target_app.command("certs")
def target_certs(
    directory: Annotated[Path, typer.Argument(help="Where to write the CA and certificates.")],
) -> None:
    """Create (or reuse) the project's CA and the feature store / target certificates."""
    from faultdrill.target_service.pki import cert_info, ensure_dev_pki

    pki = ensure_dev_pki(directory)
    for role, paths in (("ca", pki.ca), ("feature_store", pki.feature_store), ("target", pki.target)):
        info = cert_info(paths.cert)
        typer.echo(f"{role:14} {paths.cert}  valid until {info.not_after.isoformat()}")


@target_app.command("config")
def target_config() -> None:
    """Print every environment variable of the target and feature store as a Markdown table."""
    from faultdrill.target_service.config import FeatureStoreSettings, TargetSettings

    for cls, prefix in ((TargetSettings, "FAULTDRILL_"), (FeatureStoreSettings, "FAULTDRILL_FS_")):
        typer.echo("\n| variable | default | meaning |\n|---|---|---|")
        for name, field in cls.model_fields.items():
            default = "(computed)" if field.default_factory is not None else field.default
            if hasattr(default, "value"):
                default = default.value
            typer.echo(f"| `{prefix}{name.upper()}` | `{default}` | {field.description or ''} |")


@target_app.command("tour")
def target_tour(
    workdir: Annotated[Path, typer.Option(help="Where certificates, models and logs go.")] = Path(".faultdrill/demo"),
) -> None:
    """A guided tour: the target and its feature store answering, the dependency broken and back."""
    from faultdrill.demo import run_demo

    raise typer.Exit(run_demo(workdir))


def main() -> None:
    """Console-script entry point: framework errors become one readable line, never a traceback."""
    from faultdrill.faults.errors import (
        BlastRadiusError,
        ConfigError,
        FaultdrillError,
        PluginError,
        PreflightError,
    )

    try:
        app(standalone_mode=True)
    except (ConfigError, PluginError, BlastRadiusError, PreflightError) as exc:
        typer.echo(f"faultdrill: error: {exc}", err=True)
        raise SystemExit(2) from None
    except FaultdrillError as exc:
        typer.echo(f"faultdrill: error: {exc}", err=True)
        raise SystemExit(1) from None
