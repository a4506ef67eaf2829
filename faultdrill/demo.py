"""``faultdrill demo``: the bundled target and its feature store, up and answering.

It starts the feature store (HTTPS, certificates from the project's own CA) and the target
as real processes on loopback, classifies real digits, then stops the feature store and
shows the target keep answering through its fallback with the breaker open, brings the
store back and shows recovery, and finally drains the target with SIGTERM. Every step
checks what it shows; the exit code is 1 if any step did not behave.
"""

from __future__ import annotations

import secrets
import ssl
import sys
import time
from pathlib import Path

import httpx
from rich.markup import escape

from faultdrill.experiments.host.process import ServiceError, ServiceProcess, free_port
from faultdrill.output_cli import make_console, make_table, print_table, row

__all__ = ["run_demo"]


def _infer(client: httpx.Client, base: str, rows: list[list[float]]) -> httpx.Response:
    body = {"inputs": [{"name": "input", "shape": [len(rows), 64], "datatype": "FP32",
                        "data": [v for r in rows for v in r]}]}  # fmt: skip
    return client.post(f"{base}/v2/models/digits/infer", json=body)


def run_demo(workdir: Path) -> int:
    console = make_console()  # in a pipe (CI logs): lines with paths and URLs are never wrapped
    workdir.mkdir(parents=True, exist_ok=True)
    from faultdrill.target_service.models import load_digits_data
    from faultdrill.target_service.pki import ensure_dev_pki
    from faultdrill.target_service.registry import ModelRegistry

    console.rule("[bold]faultdrill demo: the bundled inference target")
    pki = ensure_dev_pki(workdir / "pki")
    registry = workdir / "models"
    for m in ModelRegistry(registry).ensure_defaults():
        console.print(f"model [bold]{escape(m.name)}[/] v{m.version} sha256 {m.sha256[:12]} {escape(str(m.metrics))}")

    fs_port, port, admin_port = free_port(), free_port(), free_port()
    token = secrets.token_urlsafe(24)
    store = ServiceProcess(
        "feature-store", [sys.executable, "-m", "faultdrill.target_service", "feature-store"],
        env={"FAULTDRILL_FS_PORT": str(fs_port), "FAULTDRILL_FS_TLS_CERT_FILE": str(pki.feature_store.cert),
             "FAULTDRILL_FS_TLS_KEY_FILE": str(pki.feature_store.key)},
        log_path=workdir / "feature-store.log",
    )  # fmt: skip
    target = ServiceProcess(
        "target", [sys.executable, "-m", "faultdrill.target_service", "serve"],
        env={"FAULTDRILL_PORT": str(port), "FAULTDRILL_ADMIN_PORT": str(admin_port),
             "FAULTDRILL_ADMIN_TOKEN": token, "FAULTDRILL_MODEL_REGISTRY": str(registry),
             "FAULTDRILL_FEATURE_STORE_URL": f"https://127.0.0.1:{fs_port}",
             "FAULTDRILL_CA_FILE": str(pki.ca.cert), "FAULTDRILL_BREAKER_RESET_TIMEOUT_S": "1"},
        log_path=workdir / "target.log",
    )  # fmt: skip
    ca = ssl.create_default_context(cafile=str(pki.ca.cert))
    base = f"http://127.0.0.1:{port}"
    ok = True

    def check(cond: bool, what: str) -> None:
        nonlocal ok
        ok = ok and cond
        console.print(("[green]✔[/] " if cond else "[red]✘[/] ") + what)

    try:
        store.start()
        t = store.wait_http(f"https://127.0.0.1:{fs_port}/healthz", 30, verify=ca)
        console.print(f"feature store up on https://127.0.0.1:{fs_port} in {t:.2f}s (TLS, project CA)")
        target.start()
        t = target.wait_http(f"{base}/v2/health/ready", 60)
        check(t <= 60, f"target ready on {base} in {t:.2f}s")
        data = load_digits_data()
        rows = data.X_test[:16].tolist()
        labels = data.y_test[:16].tolist()
        with httpx.Client(timeout=5.0) as client:
            meta = client.get(f"{base}/v2").json()
            device, model = escape(str(meta["device"]["label"])), escape(str(meta["model"]))
            console.print(f"device: [bold]{device}[/] — model {model}")
            r = _infer(client, base, rows)
            check(r.status_code == 200, f"POST /v2/models/digits/infer → {r.status_code}")
            doc = r.json()
            preds = doc["parameters"]["predictions"]
            table = make_table("row", "true digit", "predicted", "confidence", title="real torch inference")
            probs = doc["outputs"][0]["data"]
            for i, (y, p) in enumerate(zip(labels, preds, strict=True)):
                row(table, str(i), str(y), str(p), f"{max(probs[i * 10:(i + 1) * 10]):.3f}")
            print_table(console, table)
            correct = sum(int(y == p) for y, p in zip(labels, preds, strict=True))
            check(correct >= 14, f"{correct}/16 correct; feature source {doc['parameters']['feature_source']}")

            console.rule("dependency outage: the feature store is stopped")
            store.stop()
            sources = []
            for _ in range(12):
                r = _infer(client, base, rows[:1])
                sources.append((r.status_code, r.json().get("parameters", {}).get("feature_source")))
            breaker = client.get(f"{base}/v2").json()["dependency"]["breaker"]
            check(all(code == 200 for code, _ in sources), "every request still answered 200")
            check(sources[-1][1] in ("stale_cache", "default"), f"served degraded from {sources[-1][1]}")
            check(breaker == "open", f"circuit breaker {breaker}")

            console.rule("the feature store returns")
            store.start()
            store.wait_http(f"https://127.0.0.1:{fs_port}/healthz", 30, verify=ca)
            deadline = time.monotonic() + 15
            source = None
            while time.monotonic() < deadline:
                r = _infer(client, base, rows[:1])
                source = r.json()["parameters"]["feature_source"]
                if source in ("fresh", "cache"):
                    break
                time.sleep(0.2)
            breaker = client.get(f"{base}/v2").json()["dependency"]["breaker"]
            check(source in ("fresh", "cache") and breaker == "closed",
                  f"recovered: feature source {source}, breaker {breaker}")  # fmt: skip
        console.rule("SIGTERM: drain and exit")
        code = target.stop()
        check(code == 0, f"target exited with code {code}")
    except ServiceError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        ok = False
    finally:
        target.stop()
        store.stop()
    console.print(f"logs: {workdir}/target.log, {workdir}/feature-store.log", markup=False)
    console.rule("[green]demo passed" if ok else "[red]demo failed")
    return 0 if ok else 1
