"""``dispatch up --workers N`` with metrics: each worker process its own Prometheus port.

The workers here are small scripts that create the same metrics runtime the real worker does
(``app.telemetry.metrics_runtime``), so a port two workers shared would fail to bind.
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from app.cli import build_parser
from app.stack import RestartPolicy, Stack, StackError, metrics_base
from dispatch.config import load_firm_config
from tests.harness import eventually
from tests.sandbox_server import free_port

ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import os, time
from app.telemetry import metrics_runtime

runtime = metrics_runtime()
print("metrics on", os.environ["DISPATCH_METRICS_ADDRESS"], "; polling task queue", flush=True)
time.sleep(120)
"""


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports."""
    for _ in range(50):
        base = free_port()
        if base + count > 65535:
            continue
        sockets = [socket.socket() for _ in range(count)]
        try:
            for n, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", base + n))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no run of free ports")


async def scrape(port: int) -> bool | None:
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
    except httpx.HTTPError:
        return None
    return True if answer.status_code == 200 else None


async def test_each_worker_serves_metrics_on_its_own_port_and_keeps_it_when_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "worker.py").write_text(WORKER)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("DISPATCH_METRICS_ADDRESS", raising=False)
    base = free_ports(3)
    policy = RestartPolicy(first_delay=0.1, max_delay=0.1)
    stack = Stack(
        load_firm_config(),
        tmp_path / "firm.yaml",
        root=tmp_path,
        data=tmp_path / "data",
        workers=3,
        metrics=("127.0.0.1", base),
        policy=policy,
    )
    try:
        await stack.start_workers()
        workers = {p.name: p for p in stack.processes}
        assert sorted(workers) == ["worker-1", "worker-2", "worker-3"]
        for n in (1, 2, 3):
            worker = workers[f"worker-{n}"]
            assert f"metrics on 127.0.0.1:{base + n - 1} " in worker.log_since_start()
            port = base + n - 1
            await eventually(partial(scrape, port), what=f"metrics of worker-{n}")

        second = workers["worker-2"]
        first_pid = second.pid
        second.popen.kill()
        second.popen.wait()
        reports: list[str] = []

        async def back() -> bool | None:
            await stack.check_children(reports.append)
            if second.pid == first_pid or f"127.0.0.1:{base + 1} " not in second.log_since_start():
                return None
            return await scrape(base + 1)

        await eventually(back, what="worker-2 back on its own port")
        assert any("worker-2 restarted" in r for r in reports)
    finally:
        await stack.stop()


def test_the_base_comes_from_the_flag_or_the_environment() -> None:
    assert metrics_base(9500) == ("127.0.0.1", 9500)
    assert metrics_base(None, "0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert metrics_base(None, "") is None
    for bad in ("9464", "host:port", "127.0.0.1:70000"):
        with pytest.raises(StackError, match="DISPATCH_METRICS_ADDRESS must be host:port"):
            metrics_base(None, bad)


def test_without_metrics_workers_get_no_address(tmp_path: Path) -> None:
    stack = Stack(load_firm_config(), tmp_path / "firm.yaml", data=tmp_path, metrics=None)
    assert stack.worker_env("worker-1") == {}
    stack.metrics = ("0.0.0.0", 9464)
    assert stack.worker_env("worker-4") == {"DISPATCH_METRICS_ADDRESS": "0.0.0.0:9467"}


def test_a_bad_metrics_port_is_refused_by_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["up", "--metrics-port", "80"])
    assert exited.value.code == 2
    assert "--metrics-port: must be between 1024" in capsys.readouterr().err
    assert build_parser().parse_args(["up", "--metrics-port", "9500"]).metrics_port == 9500


def test_the_prometheus_examples_scrape_every_worker_where_it_serves(tmp_path: Path) -> None:
    deploy = ROOT / "deploy" / "prometheus"
    local = yaml.safe_load((deploy / "dispatch-up.yml").read_text())
    [workers] = [j for j in local["scrape_configs"] if j["job_name"] == "dispatch-worker"]
    stack = Stack(load_firm_config(), tmp_path / "firm.yaml", data=tmp_path, workers=4)
    stack.metrics = metrics_base(9464)
    assert workers["static_configs"][0]["targets"] == [
        stack.metrics_address(f"worker-{n}") for n in (1, 2, 3, 4)
    ]

    compose = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
    port = int(
        compose["services"]["worker"]["environment"]["DISPATCH_METRICS_ADDRESS"].rsplit(":", 1)[1]
    )
    scaled = yaml.safe_load((deploy / "prometheus-scaled.yml").read_text())
    [replicas] = [j for j in scaled["scrape_configs"] if j["job_name"] == "dispatch-worker"]
    assert replicas["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": port, "refresh_interval": "30s"}
    ]
    override = yaml.safe_load((deploy / "scaled.compose.yml").read_text())
    [mount] = override["services"]["prometheus"]["volumes"]
    source, target = mount.removesuffix(":ro").split(":")
    assert (ROOT / source).resolve() == deploy / "prometheus-scaled.yml"
    assert f"{target}:ro" in compose["services"]["prometheus"]["volumes"][0]
