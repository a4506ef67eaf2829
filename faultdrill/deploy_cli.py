"""``faultdrill deploy …``: prepare and render the Kubernetes manifests of the bundled target.

``secrets DIR`` writes the files the Kustomize base's ``secretGenerator`` reads (project CA,
the feature store's in-cluster certificate and key, fresh admin tokens; mode 0600, git-ignored),
``render OVERLAY`` prints what ``kubectl kustomize OVERLAY`` prints (our renderer, see
``experiments/platforms/kubernetes/manifests.py``), so ``faultdrill deploy render … | kubectl apply -f -``
works without kustomize. Runnable alone: ``python -m faultdrill.deploy_cli secrets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["deploy_app"]

deploy_app = typer.Typer(help="Kubernetes manifests of the bundled target: secrets, render.", no_args_is_help=True)


@deploy_app.command("secrets")
def deploy_secrets(
    directory: Annotated[Path, typer.Argument(help="Where the secretGenerator reads them.")] = Path(
        "target_service/deploy/base/secrets"),
    namespace: Annotated[str, typer.Option(help="Namespace named in the certificate's DNS names.")] = "faultdrill",
) -> None:
    """Write CA, feature-store certificate + key and admin tokens (existing tokens are kept)."""
    from faultdrill.experiments.platforms.kubernetes.manifests import write_secrets

    for path in write_secrets(directory, namespace=namespace):
        typer.echo(f"wrote {path}")


@deploy_app.command("render")
def deploy_render(
    overlay: Annotated[Path, typer.Argument(help="A kustomization directory.")] = Path(
        "target_service/deploy/overlays/cpu"),
) -> None:
    """Print the rendered manifests (multi-document YAML)."""
    from faultdrill.experiments.platforms.kubernetes.manifests import dump_all, render

    typer.echo(dump_all(render(overlay)), nl=False)


if __name__ == "__main__":
    deploy_app()
