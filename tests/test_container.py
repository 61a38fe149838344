"""The container image and the Kubernetes manifests, proven against each other: `make image` builds
the image with podman (from this checkout), the container runs as the rendered Deployment says
(args, env, user, read-only root, the ConfigMap's file read-only, a writable /tmp), signs, answers
the probes, and drains on `podman stop`; every rendered object validates against Kubernetes'
schemas; ports, probe paths, user, config path and drain timeout agree between the two.

Marked `container` (`pytest -m "not container"` skips them); they need podman and runc (`.ci/run`
installs them), and kubectl for rendering."""

import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests
import yaml

from helpers import KEY, SECRET, route, wait_for
from peers.processes import ROOT
from peers.upstream import Upstream, verify_then_answer

pytestmark = [pytest.mark.container, pytest.mark.e2e]
DEPLOY = ROOT / "deploy"
TOKEN = "container-test-token-0123456789"
SLOW = 3.0


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    env = os.environ | {"CONTAINERS_CONF": str(DEPLOY / "podman" / "containers.conf")}
    return subprocess.run(
        ["podman", "--runtime", "runc", *args], env=env, text=True, capture_output=True, **kw
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    """`kubectl kustomize deploy/kubernetes`, by kind."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "kubernetes")], check=True, capture_output=True, text=True
    ).stdout
    return {doc["kind"]: doc for doc in yaml.safe_load_all(out)}


@pytest.fixture(scope="module")
def containerfile() -> dict[str, str]:
    """The Containerfile's instructions (the last of each), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Containerfile").read_text())
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return {line.split(None, 1)[0]: line.split(None, 1)[1] for line in lines}


def container_spec(rendered: dict) -> dict:
    return rendered["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def test_every_rendered_object_validates_against_kubernetes_schemas(rendered):
    import kubernetes_validate

    assert set(rendered) == {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    }
    for doc in rendered.values():
        kubernetes_validate.validate(doc, "1.32.0", strict=True)  # raises on the first error
    # an object that breaks the schema is caught (the validator is not a no-op)
    broken = yaml.safe_load(yaml.safe_dump(rendered["Deployment"]))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.32.0", strict=True)


def test_the_manifest_and_the_image_agree(rendered, containerfile):
    container = container_spec(rendered)
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    args = container["args"]
    image_args = yaml.safe_load(containerfile["CMD"])
    assert args == image_args  # the Deployment runs the image as its default command does
    flags = dict(zip(args[::2], args[1::2], strict=True))
    exposed = {int(p) for p in containerfile["EXPOSE"].split()}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {ports["proxy"], ports["health"]} == exposed
    assert (int(flags["-p"]), int(flags["--health-port"])) == (ports["proxy"], ports["health"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    user, group = (int(x) for x in containerfile["USER"].split(":"))
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (user, group)
    assert pod["securityContext"]["runAsNonRoot"] is True
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert flags["-c"] == mount["mountPath"] + "/proxysigv4.yaml" and mount["readOnly"] is True
    configmap = rendered["ConfigMap"]
    assert "proxysigv4.yaml" in configmap["data"]
    assert (
        next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"]
        == configmap["metadata"]["name"]
    )
    writable = next(m for m in container["volumeMounts"] if m["name"] == "tmp")["mountPath"]
    assert flags["--set"] == f"confdir={writable}/mitmproxy" and "HOME=/tmp" in containerfile["ENV"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + int(flags["--drain-timeout"])
    service = rendered["Service"]["spec"]["ports"][0]
    assert (
        service["targetPort"] == "proxy"
        and rendered["Service"]["spec"]["selector"]
        == rendered["Deployment"]["spec"]["selector"]["matchLabels"]
    )
    config = yaml.safe_load(configmap["data"]["proxysigv4.yaml"])["proxysigv4"]
    assert config["bearerTokens"] == ["${PROXY_TOKEN}"]  # listening beyond loopback: inbound auth on
    env = {e["name"]: e for e in container["env"]}
    assert env["PROXY_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "proxysigv4-tokens"
    name, namespace = rendered["Service"]["metadata"]["name"], rendered["Service"]["metadata"]["namespace"]
    assert f"{name}.{namespace}.svc.cluster.local" in config["allowedHosts"]
    assert rendered["ServiceAccount"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )


@pytest.fixture(scope="module")
def image() -> str:
    """`make image` from this checkout (CI: a fresh clone); its tag."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman and runc are not installed (apt-get install podman runc; .ci/run installs them)")
    command = ["make", "--no-print-directory", "image"]  # under `make test`, make would name its directory
    built = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    lines = built.stdout.strip().splitlines()
    tag = lines[-1]  # make image prints the tag last
    assert re.fullmatch(r"localhost/proxysigv4:\d+\.\d+\.\d+", tag), lines[-5:]
    print(lines[-2])  # its size
    inspect = podman("image", "inspect", tag, "--format", "{{.Config.User}}")
    assert inspect.stdout.strip() == "10001:10001"
    return tag


def slow_answer(received):
    if "/slow" in received.target:
        time.sleep(SLOW)
    return verify_then_answer({KEY: (SECRET, None)})(received)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_the_container_runs_as_the_deployment_says_and_drains_on_podman_stop(image, rendered, tmp_path):
    container = container_spec(rendered)
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert all(port_is_free(p) for p in ports.values()), f"ports {ports} are taken on this host"
    with Upstream(slow_answer) as upstream:
        # The ConfigMap's file with one more route, to a verifying upstream on this host.
        config = yaml.safe_load(rendered["ConfigMap"]["data"]["proxysigv4.yaml"])
        config["proxysigv4"]["/test"] = route(upstream.url)
        config_dir = tmp_path / "config"
        config_dir.mkdir()
        (config_dir / "proxysigv4.yaml").write_text(yaml.safe_dump(config))
        os.chmod(config_dir, 0o755)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        security, pod_security = container["securityContext"], pod["securityContext"]
        name = f"proxysigv4-test-{os.getpid()}"
        run = [
            "run", "--detach", "--name", name, "--network", "host",
            "--user", f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}",
            "--volume", f"{config_dir}:{mounts['config']['mountPath']}:ro",
            "--tmpfs", f"{mounts['tmp']['mountPath']}:rw,size=64m,mode=1777",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--env", f"PROXY_TOKEN={TOKEN}", "--env", f"AWS_ACCESS_KEY_ID={KEY}",
            "--env", f"AWS_SECRET_ACCESS_KEY={SECRET}", "--env", "AWS_EC2_METADATA_DISABLED=true",
        ]  # fmt: skip
        if security["readOnlyRootFilesystem"]:
            run.append("--read-only")
        started = podman(*run, image, *container["args"])
        assert started.returncode == 0, started.stderr
        try:
            proxy, health = f"http://127.0.0.1:{ports['proxy']}", f"http://127.0.0.1:{ports['health']}"
            probes = {p: container[f"{p}Probe"]["httpGet"]["path"] for p in ("readiness", "liveness")}
            wait_for(lambda: port_is_free(ports["health"]) is False, 60)
            wait_for(lambda: requests.get(health + probes["readiness"], timeout=2).status_code == 200, 30)
            assert requests.get(health + probes["liveness"], timeout=2).status_code == 200
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert requests.get(f"{proxy}/test/x", timeout=5).status_code == 401  # inbound auth is on
            signed = requests.get(f"{proxy}/test/x", headers=auth, timeout=5)
            assert signed.status_code == 200 and signed.text == "ok"  # verified upstream
            result: dict = {}
            thread = threading.Thread(
                target=lambda: result.update(r=requests.get(f"{proxy}/test/slow", headers=auth, timeout=20))
            )
            thread.start()
            time.sleep(0.5)
            grace = str(pod["terminationGracePeriodSeconds"])
            stopped_at = time.monotonic()
            stop = podman("stop", "-t", grace, name, timeout=120)
            assert stop.returncode == 0, stop.stderr
            thread.join(10)
            assert result["r"].status_code == 200 and result["r"].text == "ok"
            assert time.monotonic() - stopped_at < SLOW + 2
            code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
            assert code == "0"

            # the container's log (conmon writes it behind the process): JSON lines, the drain's last
            def drained() -> str | None:
                got = podman("logs", name)  # JSON lines: the proxy's on stderr, mitmproxy's on stdout
                out = got.stdout + got.stderr
                return out if "proxysigv4: drained in" in out else None

            logs = wait_for(drained, 10)
            assert '"logger": "proxysigv4.request"' in logs and SECRET not in logs
        finally:
            logs = podman("logs", name)
            print(logs.stdout[-3000:], logs.stderr[-3000:])  # shown when the test fails
            podman("rm", "-f", name)
