"""ofc.engine and ofc.base_image without dockerd: the registry config, the state file,
socket paths, the refusal to signal a PID that is not ours, the network restore plan,
the reasons a machine cannot run an engine, and the base image's cache key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ofc import engine as engine_mod
from ofc.base_image import BaseImageError, BaseImageSpec
from ofc.engine import (
    REGISTRY_TEMPLATE,
    EngineError,
    EngineInfo,
    NetworkSnapshot,
    ProcessRecord,
    can_run_engine,
    engine_paths,
    load_engine,
    parse_links,
    plan_network_restore,
    render_registry_config,
    stop_engine,
)
from tests.helpers import OFC, alive, wait_until


# -- the registry's config ------------------------------------------------------------------------
def test_registry_config_listens_on_the_given_loopback_port_with_deletes_enabled(tmp_path: Path):
    text = render_registry_config(REGISTRY_TEMPLATE.read_text(), "127.0.0.1:5391", tmp_path)
    config = yaml.safe_load(text)
    assert config["http"]["addr"] == "127.0.0.1:5391"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path)
    assert config["storage"]["delete"]["enabled"] is True
    assert "auth" not in config  # the packaged config's htpasswd file is not ours


@pytest.mark.parametrize(
    "addr", [":5000", "0.0.0.0:5000", "10.0.0.1:5000", "[::]:5000"],
    ids=["every-interface", "any-ipv4", "private", "any-ipv6"],
)  # fmt: skip
def test_registry_config_refuses_an_address_that_is_not_loopback(tmp_path: Path, addr: str):
    with pytest.raises(EngineError, match="loopback"):
        render_registry_config(REGISTRY_TEMPLATE.read_text(), addr, tmp_path)


def test_registry_config_refuses_a_template_without_the_address(tmp_path: Path):
    template = "version: 0.1\nhttp:\n  addr: :5000\nstorage:\n  filesystem:\n    rootdirectory: ${rootdirectory}\n"
    with pytest.raises(EngineError, match="does not listen on 127.0.0.1:5391"):
        render_registry_config(template, "127.0.0.1:5391", tmp_path)


# -- state file and paths -------------------------------------------------------------------------
def make_info(dir: Path, *records: ProcessRecord) -> EngineInfo:
    sock, exec_root = engine_paths(dir)
    return EngineInfo(
        dir=dir.resolve(), socket=sock, registry="127.0.0.1:5391", exec_root=exec_root,
        namespace="ofc-test", processes=records, network=NetworkSnapshot.take(), started_at=1.0,
    )  # fmt: skip


def test_state_file_round_trips_what_stop_needs(tmp_path: Path):
    record = ProcessRecord("dockerd", 123, 456, ("/usr/sbin/dockerd", "--bridge=none"))
    info = make_info(tmp_path, record)
    info.save()
    loaded = load_engine(tmp_path)
    assert loaded == info
    assert loaded.pids == {"dockerd": 123}
    assert loaded.env_lines() == [
        f"DOCKER_HOST=unix://{tmp_path.resolve()}/docker.sock",
        "OFC_REGISTRY=127.0.0.1:5391",
    ]


def test_load_engine_without_state_file_is_none(tmp_path: Path):
    assert load_engine(tmp_path) is None


def test_load_engine_names_a_corrupt_state_file(tmp_path: Path):
    (tmp_path / "engine.json").write_text("{not json")
    with pytest.raises(EngineError, match="engine.json is not an engine state file"):
        load_engine(tmp_path)


def test_sockets_of_a_deep_dir_go_to_a_short_path_under_tmp(tmp_path: Path):
    deep = tmp_path / ("d" * 120)
    sock, exec_root = engine_paths(deep)
    assert len(str(exec_root / "containerd" / "containerd-debug.sock")) < 108
    assert sock.parent == exec_root.parent
    assert str(sock).startswith("/tmp/ofc-engine-")
    assert engine_paths(deep) == (sock, exec_root)  # stable: `down` finds what `up` made
    assert engine_paths(tmp_path / ("e" * 120))[0] != sock


def test_sockets_of_a_short_dir_stay_in_it(tmp_path: Path):
    sock, exec_root = engine_paths(tmp_path)
    assert sock == tmp_path.resolve() / "docker.sock"
    assert exec_root == tmp_path.resolve() / "exec"


# -- PIDs -----------------------------------------------------------------------------------------
@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    wait_until(lambda: ProcessRecord.of("sleeper", proc.pid), 5, "sleeper did not start")
    yield proc
    proc.kill()
    proc.wait(5)


def test_a_record_owns_its_pid_only_with_the_same_cmdline_and_start_time(sleeper):
    record = ProcessRecord.of("sleeper", sleeper.pid)
    assert record is not None and record.owned()
    assert not ProcessRecord("x", sleeper.pid, record.start_time, ("dockerd",)).owned()
    assert not ProcessRecord("x", sleeper.pid, record.start_time + 1, record.cmdline).owned()


def test_stop_refuses_to_signal_a_pid_that_now_runs_another_command(tmp_path: Path, sleeper):
    # The recorded registry's PID now belongs to an unrelated process (PID reuse).
    real = ProcessRecord.of("sleeper", sleeper.pid)
    fake = ProcessRecord(
        "registry", sleeper.pid, real.start_time, ("/usr/bin/docker-registry", "serve", "x.yml")
    )
    make_info(tmp_path, fake).save()
    report = stop_engine(tmp_path, registry_grace=1.0)
    assert alive(sleeper.pid) and sleeper.poll() is None
    assert any("not signalled" in line and str(sleeper.pid) in line for line in report.stopped)
    assert not report.leftover
    assert load_engine(tmp_path) is None  # nothing of ours runs: the state is cleared


def test_stop_signals_a_pid_it_owns(tmp_path: Path, sleeper):
    make_info(tmp_path, ProcessRecord.of("registry", sleeper.pid)).save()
    report = stop_engine(tmp_path, registry_grace=5.0)
    assert sleeper.wait(5) == -15
    assert report.stopped == [f"registry (pid {sleeper.pid}) stopped"]


def test_stop_without_state_reports_nothing_found(tmp_path: Path):
    assert stop_engine(tmp_path).found is False


# -- network --------------------------------------------------------------------------------------
def test_parse_links_drops_the_peer_suffix():
    out = (
        "1: lo: <LOOPBACK,UP> mtu 65536 qdisc noqueue\\    link/loopback 00:00\n"
        "7: veth1a2b3c4@if6: <BROADCAST> mtu 1500\\    link/ether 02:42\n"
    )
    assert parse_links(out) == ("lo", "veth1a2b3c4")


BEFORE = NetworkSnapshot(("lo", "eth0"), {"iptables": "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"})
NAT = (
    "*nat\n:PREROUTING ACCEPT [3:120]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n"
    "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT\n"
)


@pytest.mark.parametrize(
    ("links", "own", "other", "expected"),
    [
        (("docker0",), (), False, ["deleted link docker0"]),
        (("docker0",), (), True, ["link docker0 appeared; another dockerd runs: left alone"]),
        (("br-0123456789ab",), ("0123456789abcdef",), True, ["deleted link br-0123456789ab"]),
        (("br-0123456789ab",), (), True, ["link br-0123456789ab appeared; another dockerd runs: left alone"]),
        (("tap0",), (), False, ["link tap0 appeared, not dockerd's: left alone"]),
    ],
    ids=["docker0", "docker0-other-engine", "own-bridge", "foreign-bridge", "not-docker"],
)  # fmt: skip
def test_restore_plan_deletes_only_links_our_dockerd_made(links, own, other, expected):
    after = NetworkSnapshot(("lo", "eth0", *links), BEFORE.tables)
    plan = plan_network_restore(BEFORE, after, own_bridges=own, other_dockerd=other)
    assert [a.describe for a in plan] == expected
    assert all(a.argv == ("ip", "link", "delete", links[0]) for a in plan if a.argv)


def test_restore_plan_ignores_counter_changes():
    after = NetworkSnapshot(BEFORE.links, {"iptables": "*filter\n:INPUT ACCEPT [9:999]\nCOMMIT\n"})
    assert plan_network_restore(BEFORE, after) == []


def test_restore_plan_puts_back_docker_rules_and_empties_a_table_docker_loaded():
    after = NetworkSnapshot(BEFORE.links, {"iptables": BEFORE.tables["iptables"] + NAT})
    [action] = plan_network_restore(BEFORE, after)
    assert action.argv == ("iptables-restore",)
    assert action.stdin.startswith(BEFORE.tables["iptables"])
    assert "*nat\n:PREROUTING ACCEPT\n:POSTROUTING ACCEPT\nCOMMIT\n" in action.stdin
    assert "DOCKER" not in action.stdin


def test_restore_plan_leaves_firewall_changes_that_are_not_dockers():
    added = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
    after = NetworkSnapshot(BEFORE.links, {"iptables": added})
    assert [a.describe for a in plan_network_restore(BEFORE, after)] == [
        "iptables changed, not by dockerd: left alone"
    ]


# -- can this machine run one -----------------------------------------------------------------------
def test_can_run_engine_says_root_is_needed(monkeypatch):
    monkeypatch.setattr(engine_mod.os, "geteuid", lambda: 1000)
    assert can_run_engine() == "dockerd needs root (running as uid 1000)"


def test_can_run_engine_names_a_missing_binary_and_its_package(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(engine_mod.os, "geteuid", lambda: 0)
    reason = can_run_engine(registry=str(tmp_path / "docker-registry"))
    assert reason == f"missing: {tmp_path}/docker-registry (apt-get install docker-registry)"


def test_start_engine_says_why_it_cannot_run(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(engine_mod.os, "geteuid", lambda: 1000)
    with pytest.raises(EngineError, match="cannot run dockerd here: dockerd needs root"):
        engine_mod.start_engine(tmp_path / "engine")
    assert not (tmp_path / "engine").exists()


# -- the CLI without an engine ----------------------------------------------------------------------
def test_cli_status_and_down_of_a_dir_without_engine(tmp_path: Path):
    env = {**os.environ, "OFC_STATE_DIR": str(tmp_path)}
    status = subprocess.run([OFC, "engine", "status"], env=env, capture_output=True, text=True)
    assert (status.returncode, status.stderr) == (1, f"no engine in {tmp_path}/engine\n")
    down = subprocess.run([OFC, "engine", "down"], env=env, capture_output=True, text=True)
    assert (down.returncode, down.stderr) == (0, f"no engine was started in {tmp_path}/engine\n")


# -- the base image's identity ----------------------------------------------------------------------
def test_base_image_key_follows_contents_not_the_mirror():
    spec = BaseImageSpec()
    assert BaseImageSpec(mirror="http://mirror.example/debian").key == spec.key
    assert BaseImageSpec(packages=(*spec.packages, "git")).key != spec.key
    assert BaseImageSpec(suite="trixie").key != spec.key
    assert BaseImageSpec(extra_ca=b"-----BEGIN CERTIFICATE-----\n").key != spec.key
    assert spec.labels["org.ofc.base-image.packages"] == "python3,python3-venv,ca-certificates"


def test_base_image_extra_ca_must_be_a_pem_certificate(tmp_path: Path):
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate")
    with pytest.raises(BaseImageError, match="is not a PEM certificate"):
        BaseImageSpec.from_env({}, bad)
    with pytest.raises(BaseImageError, match="cannot read the extra CA"):
        BaseImageSpec.from_env({}, tmp_path / "missing.crt")


def test_base_image_mirror_from_the_environment():
    assert (
        BaseImageSpec.from_env({"OFC_DEBIAN_MIRROR": "http://m/debian"}).mirror == "http://m/debian"
    )
