"""Meta-training against an existing Ray cluster: a head and one worker node, started here on
127.0.0.1 (``ray start --head`` / ``ray start --address``), joined with ``vec_env.address``; the
run gives the same policy as a local run with the same seed.

The cluster's processes are this test's own (``ray start --block`` in a new process group, a
temporary directory and ports of its own), and they are ended by their process group in a
``finally``: a plain ``ray stop`` would also stop any other Ray on the machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_train_config

ray = pytest.importorskip("ray")

from rlhpo.policy.artifact import load_artifact  # noqa: E402
from rlhpo.train import run  # noqa: E402

pytestmark = pytest.mark.slow  # starts a two-node Ray cluster and meta-trains twice

RAY = str(Path(sys.executable).parent / "ray")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_args() -> list[str]:
    """The ports a node opens, all free ones (another Ray on the machine keeps its defaults)."""
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port")
    return [f"--{name}={port}" for name, port in zip(names, free_ports(len(names)))]


#: the test cluster listens on 127.0.0.1 only: no token authentication (Ray turns it on for a new
#: cluster, and a client without the token is refused); a real cluster keeps it (Ray's token-auth docs)
CLUSTER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def start_node(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([RAY, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", *node_args(), *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **CLUSTER_ENV})


def stop(process: subprocess.Popen) -> None:
    """End a node: SIGTERM to its process group (``ray start --block`` stops what it started), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for_nodes(address: str, n: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
                            "print(sum(x['Alive'] for x in ray.nodes()))"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **CLUSTER_ENV})
        if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the local Ray cluster at {address} did not show {n} nodes: {r.stdout}{r.stderr}")
        time.sleep(2.0)


def cluster_config(**vec_env):
    cfg = tiny_train_config(total_timesteps=128)
    cfg.vec_env.n_envs = 2
    for key, value in vec_env.items():
        setattr(cfg.vec_env, key, value)
    return cfg


#: the driver that joins the cluster runs in its own process: Ray reads its authentication mode
#: once per process, so a driver here would leave this test process unable to start a local Ray
DRIVER = """
import sys
from test_ray_cluster import cluster_config
from rlhpo.train import run
print(run(cluster_config(kind="ray", address=sys.argv[1], num_cpus_per_env=1.0), sys.argv[2]))
"""


def test_meta_training_on_a_two_node_cluster_gives_the_local_runs_policy(tmp_path):
    port, client_port = free_ports(2)
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="rlhpo-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    nodes = []
    try:
        nodes.append(start_node(["--head", f"--port={port}", f"--ray-client-server-port={client_port}",
                                 "--include-dashboard=false", f"--temp-dir={temp}"], tmp_path / "head.log"))
        wait_for_nodes(address, 1)  # a worker started before the head answers fails at once
        nodes.append(start_node([f"--address={address}"], tmp_path / "worker.log"))
        wait_for_nodes(address, 2)
        tests = str(Path(__file__).resolve().parent)
        env = {**os.environ, **CLUSTER_ENV, "PYTHONPATH": os.pathsep.join([tests, str(Path(tests).parent)])}
        driver = subprocess.run([sys.executable, "-c", DRIVER, address, str(tmp_path / "cluster")], capture_output=True,
                                text=True, timeout=600, env=env, cwd=tmp_path)
        assert driver.returncode == 0, driver.stderr[-4000:]
        remote = Path(driver.stdout.strip().splitlines()[-1])
    finally:
        for node in reversed(nodes):
            stop(node)
    local = run(cluster_config(kind="dummy"), tmp_path / "local")
    a, b = (load_artifact(p).model.state_dict() for p in (remote, local))  # the policies as plain torch modules
    assert a.keys() == b.keys() and a
    for name, value in b.items():
        np.testing.assert_allclose(a[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
