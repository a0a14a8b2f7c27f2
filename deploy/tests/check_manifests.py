#!/usr/bin/env python3
"""Renders every Kustomize overlay under deploy/ with `kubectl kustomize`,
validates the objects strictly (unknown fields are errors) against a pinned
Kubernetes schema with the `kubernetes-validate` package, and checks what the
deployment depends on: hashing on the video at the Ingress, probes on
/readyz and /healthz, a grace period that covers preStop and the drain,
non-root and a read-only root filesystem, references that resolve, and the
docker-compose file's routing. Run by crates/cli/tests/deploy_manifests.rs.

Usage: deploy/tests/check_manifests.py [--kubernetes-version 1.31.0]
"""

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
VERSION = sys.argv[sys.argv.index("--kubernetes-version") + 1] if "--kubernetes-version" in sys.argv else "1.31.0"
OVERLAYS = ["base", "overlays/dev", "overlays/aws"]
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy" / overlay)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"kubectl kustomize deploy/{overlay} failed: {out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"].startswith(name))]
    return found[0] if len(found) == 1 else None


def check_overlay(overlay, objects):
    where = f"deploy/{overlay}"
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{where}: {obj['kind']}/{obj['metadata']['name']}: {error.message}")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}

    ingress = one(objects, "Ingress", "bucket-streamer")
    check(ingress is not None, f"{where}: one Ingress")
    if ingress:
        notes = ingress["metadata"].get("annotations", {})
        check(notes.get("nginx.ingress.kubernetes.io/upstream-hash-by") == "$arg_video",
              f"{where}: the Ingress hashes on $arg_video")
        check(int(notes.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "0")) >= 3600,
              f"{where}: WebSocket-friendly read timeout")
        check("http_503" in notes.get("nginx.ingress.kubernetes.io/proxy-next-upstream", ""),
              f"{where}: a draining pod's 503 moves on to the next pod")
        check(ingress["spec"].get("ingressClassName") == "nginx", f"{where}: ingress-nginx")
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        check(("Service", backend) in names, f"{where}: the Ingress's Service {backend} exists")

    deployment = one(objects, "Deployment", "bucket-streamer")
    check(deployment is not None, f"{where}: one bucket-streamer Deployment")
    if not deployment:
        return
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{where}: readiness on /readyz")
    check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{where}: liveness on /healthz")
    config_name = container["envFrom"][0]["configMapRef"]["name"]
    config = one(objects, "ConfigMap", config_name)
    check(config is not None and config["metadata"]["name"] == config_name, f"{where}: ConfigMap {config_name}")
    drain = int(config["data"].get("DRAIN_SECS", "20")) if config else 20
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = int(pre_stop[1]) if pre_stop[0] == "sleep" else 0
    grace = pod["terminationGracePeriodSeconds"]
    check(grace >= pause + drain + 2, f"{where}: grace {grace} s covers preStop {pause} s + drain {drain} s")
    check(pod["securityContext"].get("runAsNonRoot") is True, f"{where}: runAsNonRoot")
    check(pod["securityContext"].get("runAsUser") == 10001, f"{where}: the image's user 10001")
    own = container["securityContext"]
    check(own.get("readOnlyRootFilesystem") is True, f"{where}: read-only root filesystem")
    check(own.get("allowPrivilegeEscalation") is False, f"{where}: no privilege escalation")
    check(own.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: all capabilities dropped")
    resources = container.get("resources", {})
    check("cpu" in resources.get("requests", {}) and "memory" in resources.get("limits", {}),
          f"{where}: CPU requested and memory limited")
    account = pod.get("serviceAccountName")
    check(("ServiceAccount", account) in names, f"{where}: ServiceAccount {account} exists")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ["Service", "PodDisruptionBudget"]:
        obj = one(objects, kind, "bucket-streamer")
        selector = (obj or {}).get("spec", {}).get("selector", {})
        selector = selector.get("matchLabels", selector)
        check(obj is not None and all(labels.get(k) == v for k, v in selector.items()),
              f"{where}: the {kind} selects the pods")
    hpa = one(objects, "HorizontalPodAutoscaler", "bucket-streamer")
    check(hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"],
          f"{where}: the HPA scales the Deployment")
    check(hpa is not None and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu", f"{where}: HPA on CPU")
    secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    for ref in refs:
        check(ref.get("optional") or ref["name"] in secrets, f"{where}: Secret {ref['name']} exists")
    sa = one(objects, "ServiceAccount", account)
    role = (sa or {}).get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn")
    if overlay == "overlays/aws":
        check(role is not None, f"{where}: the ServiceAccount names an IAM role (IRSA)")
        check(not secrets, f"{where}: no S3 keys stored in the cluster")
        check("S3_ENDPOINT" not in config["data"], f"{where}: real S3, no endpoint")
    if overlay == "overlays/dev":
        s3 = [r for r in refs if r["name"].startswith("bucket-streamer-s3")]
        check(s3 and all(r["name"] in secrets for r in s3), f"{where}: the S3 keys come from the generated Secret")
        check(one(objects, "Deployment", "minio") is not None, f"{where}: MinIO runs in the cluster")
        check(one(objects, "Job", "demo-video") is not None, f"{where}: a Job uploads the demo video")
        check(config["data"].get("S3_ENDPOINT") == "http://minio:9000", f"{where}: the servers use MinIO")


def check_compose():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    servers = [name for name, s in services.items() if s.get("image", "").startswith("bucket-streamer")
               and "serve" in s.get("command", ["serve"])]
    check(len(servers) == 3, f"docker-compose.yml: three servers, found {servers}")
    check("minio" in services, "docker-compose.yml: MinIO")
    nginx_conf = (ROOT / "deploy/compose/nginx.conf").read_text()
    check("hash $arg_video consistent" in nginx_conf, "compose nginx hashes on $arg_video")
    check("/etc/nginx/bucket-streamer/locations.conf" in nginx_conf, "compose nginx includes the shared locations")
    for server in servers:
        check(f"server {server}:3000" in nginx_conf, f"compose nginx routes to {server}")


for overlay in OVERLAYS:
    objects = render(overlay)
    check_overlay(overlay, objects)
    print(f"deploy/{overlay}: {len(objects)} objects valid for Kubernetes {VERSION}")
check_compose()
if failures:
    print("\n".join(f"FAIL {f}" for f in failures))
    sys.exit(1)
print("all checks passed")
