"""The Kubernetes manifests of ``target_service/deploy``: render, generate, fill in secrets.

Three jobs, each small:

- :func:`render` builds a kustomization the way ``kubectl kustomize`` does, limited to the
  features our manifests use: ``resources`` (files and directories), ``namespace``,
  ``labels`` (metadata only), ``images`` (``newName``/``newTag``), ``patches`` (JSON 6902 from a
  file, aimed by kind/name) and ``secretGenerator`` (``files``, ``type``, no name hash).
  Hand-written because neither ``kustomize`` nor ``kubectl`` is a Python dependency and the
  PyPI "kustomize" package is an unrelated reimplementation; anything else is refused with a
  located error rather than silently ignored.
- :func:`prometheus_rule` turns the shipped ``target_service/alerts/rules.yml`` into the
  Prometheus Operator's ``PrometheusRule`` (``faultdrill alerts export --prometheusrule``), so
  the cluster pages on exactly the rules the local runs prove.
- :func:`write_secrets` writes what the ``secretGenerator`` reads: the project CA, the feature
  store's certificate and key (``target_service.pki``) and fresh admin tokens (mode 0600).

Example::

    docs = render(Path("target_service/deploy/overlays/cpu"))
    [d["kind"] for d in docs]       # ['Deployment', 'Service', ..., 'Secret', ...]
"""

from __future__ import annotations

import base64
import copy
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from faultdrill.experiments.spec.kubernetes import KubernetesSettings
from faultdrill.faults.errors import ConfigError

__all__ = ["DEPLOY_DIR", "SECRET_FILES", "dump_all", "prometheus_rule", "render", "write_secrets"]

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "target_service" / "deploy"  # experiments/platforms/kubernetes/
SECRET_FILES = ("ca.crt", "feature-store.crt", "feature-store.key", "target-admin-token", "feature-store-admin-token")
_KNOWN = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches", "secretGenerator",
          "generatorOptions"}  # fmt: skip


def _fail(path: Path, field: str, message: str) -> ConfigError:
    return ConfigError(message, file=str(path), field=field)


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` would print (for the features listed above)."""
    path = Path(directory) / "kustomization.yaml"
    try:
        kz = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise _fail(path, "", f"cannot read: {exc}") from exc
    if unknown := sorted(set(kz) - _KNOWN):
        raise _fail(path, unknown[0], "kustomize feature not supported by this renderer")
    docs: list[dict[str, Any]] = []
    for entry in kz.get("resources") or []:
        target = (path.parent / entry).resolve()
        if target.is_dir():
            docs.extend(render(target))
        else:
            docs.extend(d for d in yaml.safe_load_all(target.read_text(encoding="utf-8")) if d)
    docs.extend(_secrets(path, kz))
    for i, patch in enumerate(kz.get("patches") or []):
        _patch(path, f"patches[{i}]", docs, patch)
    for image in kz.get("images") or []:
        _images(docs, image)
    for pairs in kz.get("labels") or []:
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(pairs.get("pairs") or {})
    if ns := kz.get("namespace"):
        for doc in docs:
            doc.setdefault("metadata", {})["namespace"] = ns
    return docs


def _secrets(path: Path, kz: dict[str, Any]) -> list[dict[str, Any]]:
    if not (kz.get("generatorOptions") or {}).get("disableNameSuffixHash", False) and kz.get("secretGenerator"):
        raise _fail(path, "generatorOptions.disableNameSuffixHash", "name hashes are not supported: set it true")
    out = []
    for i, gen in enumerate(kz.get("secretGenerator") or []):
        data = {}
        for spec in gen.get("files") or []:
            key, _, rel = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)
            file = path.parent / rel
            if not file.is_file():
                raise _fail(path, f"secretGenerator[{i}].files", f"{file} is missing: run `faultdrill deploy "
                            f"secrets {file.parent}` (writes the PKI files and tokens, never committed)")  # fmt: skip
            data[key] = base64.b64encode(file.read_bytes()).decode()
        out.append({"apiVersion": "v1", "kind": "Secret", "type": gen.get("type", "Opaque"),
                    "metadata": {"name": gen["name"]}, "data": data})  # fmt: skip
    return out


def _patch(path: Path, where: str, docs: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    target, ops = patch.get("target") or {}, yaml.safe_load((path.parent / patch["path"]).read_text())
    hits = [d for d in docs if d.get("kind") == target.get("kind") and d["metadata"]["name"] == target.get("name")]
    if not hits or not isinstance(ops, list):
        raise _fail(path, where, f"no {target.get('kind')}/{target.get('name')} to patch, or not a JSON 6902 list")
    for doc in hits:
        for op in ops:
            _json_patch(doc, op, path, where)


def _json_patch(doc: dict[str, Any], op: dict[str, Any], path: Path, where: str) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    key: Any = int(last) if isinstance(node, list) and last != "-" else last
    if op["op"] == "replace" and (key not in node if isinstance(node, dict) else key >= len(node)):
        raise _fail(path, where, f"replace of missing {op['path']}")
    if op["op"] in ("add", "replace"):
        if isinstance(node, list) and op["op"] == "add":
            node.insert(len(node) if key == "-" else key, copy.deepcopy(op["value"]))
        else:
            node[key] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del node[key]
    else:
        raise _fail(path, where, f"JSON patch op {op['op']!r} not supported")


def _images(docs: list[dict[str, Any]], image: dict[str, Any]) -> None:
    for doc in docs:
        pod = (doc.get("spec") or {}).get("template", {}).get("spec", {})
        for c in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            name, _, tag = c["image"].partition(":")
            if name == image["name"]:
                c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"


def dump_all(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def prometheus_rule(rules_file: Path, *, name: str = "faultdrill-target") -> str:
    """The ``PrometheusRule`` carrying exactly the groups of ``rules_file``, as YAML text."""
    doc = yaml.safe_load(Path(rules_file).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ConfigError("expected a Prometheus rules file with 'groups'", file=str(rules_file), field="groups")
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "target",
                                                  "app.kubernetes.io/part-of": "faultdrill"}},
            "spec": {"groups": doc["groups"]}}  # fmt: skip
    header = ("# GENERATED from target_service/alerts/rules.yml — do not edit; regenerate with\n"
              "#   faultdrill alerts export --prometheusrule > target_service/deploy/base/prometheusrule.yaml\n"
              "# (tests/unit/k8s/test_k8s_manifests.py fails when this file and the rules differ)\n")  # fmt: skip
    return header + yaml.safe_dump(rule, sort_keys=False, width=120, allow_unicode=True)


def write_secrets(directory: Path, *, pki_dir: Path | None = None, namespace: str = "faultdrill",
                  feature_store_app: str = KubernetesSettings().feature_store_app) -> list[Path]:  # fmt: skip
    """Write the files the base's secretGenerator reads into ``directory`` (kept, if present); the feature
    store's certificate names its Service (``feature_store_app``) in ``namespace``."""
    from faultdrill.target_service.pki import ensure_dev_pki, issue_cert

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pki = ensure_dev_pki(pki_dir or directory / ".pki")
    (directory / ".pki-cluster").mkdir(mode=0o700, exist_ok=True)
    # The in-cluster names the target dials (Service DNS), signed by the project CA.
    app = feature_store_app
    store = issue_cert(pki.ca, directory / ".pki-cluster", app, hosts=(
        app, f"{app}.{namespace}", f"{app}.{namespace}.svc", f"{app}.{namespace}.svc.cluster.local", "localhost"))
    sources = {"ca.crt": pki.ca.cert, "feature-store.crt": store.cert, "feature-store.key": store.key}
    written = []
    for name in SECRET_FILES:
        out = directory / name
        data = Path(sources[name]).read_bytes() if name in sources else None
        if data is None and out.exists():
            continue  # keep an existing token: the running pods were given it
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data if data is not None else secrets.token_urlsafe(32).encode())
        written.append(out)
    return written
