#!/usr/bin/env python3
"""The deploy check (`just deploy-check`, run by `.ci/deploy-check`).

Renders every overlay in deploy/overlays/ with kustomize (`kubectl kustomize`, kubectl from
.venv) and checks what each renders, one function per rule. Every failure names the
overlay, the object (Kind/name) and the rule; the exit status is non-zero if any fails.

Schemas (offline, pinned in .ci/requirements.txt):
  - built-in kinds: strictly (unknown fields fail) against Kubernetes KUBERNETES_VERSION,
    with kubernetes-validate;
  - custom resources: KEDA ScaledObject/TriggerAuthentication against the KEDA 2.16 CRD
    schema, Prometheus Operator PodMonitor/ServiceMonitor/PrometheusRule against the
    operator's 0.80 CRD schemas, cert-manager Issuer/ClusterIssuer/Certificate against the
    cert-manager 1.17 CRD schemas (the rendered ones and deploy/nats/tls.yaml, applied
    beside the overlays), all as the cloudcoil models generated from them; a field the
    model does not know fails too (the models drop unknown fields, so the check compares
    what went in with what came out).

Internal plane: every Switchboard service logs in to NATS as its own user, one the
generated server config (deploy/nats/auth-values.yaml) defines with permissions, and the
topology Job as `ops`, with passwords from Secrets; no secret is a literal anywhere; the
topology Job's streams.toml parses (and gives R3 in prod); where NATS serves TLS, every
client verifies it (SB_NATS_TLS_CA); KEDA reads the account the streams live in, a
`redis` trigger reads a key of the state Redis with a password from a Secret, and a
`prometheus` trigger queries metrics the code exports.

Network paths: each Service port's callers (CALLERS) get through the target's Ingress
policies and, inside the overlay, their own Egress policies (the dialer's).

CI/CD: in every overlay the deploy workflow (.github/workflows/deploy.yml) applies, it
waits for the rollout of every Deployment and StatefulSet rendered, and rolls back every
Deployment that the image changes.

Monitoring sources (deploy/base/monitoring/): every switchboard_* metric an alert or a
dashboard panel uses is one services/runtime/src/metrics.rs defines; every other metric
comes from a known exporter; every alert has a runbook section and a promtool unit test
(promtool runs in .ci/deploy-check).

Only the standard library (tomllib for streams.toml), PyYAML and the two validators above.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
OVERLAYS = ROOT / "deploy" / "overlays"
MONITORING = ROOT / "deploy" / "base" / "monitoring"
METRICS_RS = ROOT / "services" / "runtime" / "src" / "metrics.rs"
AUTH_VALUES = ROOT / "deploy" / "nats" / "auth-values.yaml"
NATS_STREAMS = ROOT / "nats" / "streams"
RUNBOOK = ROOT / "docs" / "runbook.md"
NATS_TLS = ROOT / "deploy" / "nats" / "tls.yaml"
BASE_CONFIG = ROOT / "deploy" / "base" / "k8s" / "config.yaml"
DEPLOY_WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"
REDIS_KEYS_RS = ROOT / "services" / "runtime" / "src" / "redis" / "keys.rs"

# The oldest Kubernetes minor still supported upstream when this was written; the
# manifests must be valid there (and are, unchanged, on the newer ones).
KUBERNETES_VERSION = "1.35.0"
# An overlay for a local cluster may use built-in kinds only (no KEDA, no Prometheus
# Operator); these must have the PodMonitors and alert rules.
LOCAL_OVERLAYS = {"dev"}
MONITORED_OVERLAYS = {"staging", "prod"}
# The overlays the deploy workflow applies (ci.yml: staging, then production).
CI_DEPLOYED_OVERLAYS = {"staging", "prod"}

# Who calls each Service port. Every Service port must be listed (a new port fails until
# its callers are); the NetworkPolicies must let each caller in, and keep the others out.
CALLERS = {
    # Twilio's webhooks and Media Streams, through the ingress controller; Prometheus.
    ("ingress", "http"): {"ingress-controller", "prometheus"},
    # Stage workers take their work from NATS: only Prometheus connects to them.
    ("stt", "http"): {"prometheus"},
    ("agent", "http"): {"prometheus"},
    ("tts", "http"): {"prometheus"},
    ("webhooks", "http"): {"prometheus"},
    # The operators reach the console with `kubectl port-forward`; Prometheus.
    ("console", "http"): {"prometheus"},
    # Twilio's callbacks about placed calls (/twilio/dial/*), through the ingress
    # controller; Prometheus. The campaigns API on the same port has no public route.
    ("dialer", "http"): {"ingress-controller", "prometheus"},
    # Every service uses Redis (SB_REDIS_URL); KEDA's operator reads the campaign queue's
    # cq:tenants for the dialer's scaler; redis_exporter beside it serves Prometheus.
    ("redis", "redis"): {"ingress", "stt", "agent", "tts", "dialer", "webhooks", "console", "keda"},
    ("redis", "metrics"): {"prometheus"},
    # The TTS cache's instance: the tts alone (SB_REDIS_CACHE_URL); its exporter, Prometheus.
    ("redis-cache", "redis"): {"tts"},
    ("redis-cache", "metrics"): {"prometheus"},
}
# Callers outside the namespace: where they run (deploy/README.md, "Prerequisites").
EXTERNAL_CALLERS = {
    "ingress-controller": ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "prometheus": ("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "keda": ("keda", {"app.kubernetes.io/name": "keda-operator"}),
}

# Pod Security "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}

# The one image (deploy/Dockerfile): its service binaries log in to NATS as their own user,
# the operator's `switchboard` as `ops`; without a `command` the image runs the ingress.
SWITCHBOARD_IMAGE = "switchboard"
SERVICE_BINARIES = {"ingress", "stt", "agent", "tts", "dialer", "webhooks", "console"}
OPS_BINARY = "switchboard"
IMAGE_DEFAULT_BINARY = "ingress"
# Overlays whose NATS serves client TLS (deploy/nats/values.yaml): every client verifies it.
NATS_TLS_OVERLAYS = {"staging", "prod"}
# Replicas every stream must have in an overlay (a node's loss loses nothing: R3 in prod).
STREAM_REPLICAS = {"prod": 3}
# The fields of streams.toml (runtime::reconcile::StreamSettings).
STREAM_SETTING_KEYS = ("replicas", "storage", "max_age_secs", "max_bytes")
# Env var and ConfigMap key names that hold a secret: never a literal value.
SECRET_ENV = re.compile(r"_PASSWORD|_KEY$|_TOKEN$|_SECRET$|_AUTH$")
SECRET_ENV_NAMES = {"SB_REDIS_URL", "SB_REDIS_CACHE_URL"}
# scheme://user:password@ or scheme://:password@
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)

# The state Redis' Service (the campaign queue lives there; a KEDA redis trigger reads it,
# never the TTS cache's instance).
STATE_REDIS_SERVICE = "redis"

# Metrics alerts and panels may use besides Switchboard's own, by exporter.
EXPORTER_METRICS = {
    # kube-state-metrics
    "kube_deployment_status_replicas_available",
    # prometheus-nats-exporter as the NATS Helm chart runs it (-jsz=all -prefix=nats)
    "nats_consumer_num_pending", "nats_consumer_num_ack_pending",
    # redis_exporter (the sidecar in deploy/base/k8s/redis.yaml)
    "redis_memory_used_bytes", "redis_memory_max_bytes",
}
EXPORTER_PREFIXES = ("kube_", "nats_", "redis_")

# A Redis without persistence never forks; its limit still covers buffers and fragmentation.
REDIS_NO_FORK_MARGIN = 1.25

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/", "cert-manager.io/")


# --- results -----------------------------------------------------------------------------


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    rules_run: int = 0

    def fail(self, where: str, rule: str, message: str) -> None:
        self.failures.append(f"{where}: {rule}: {message}")


def ident(overlay: str, doc: dict) -> str:
    return f"{overlay}/{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --- rendering ---------------------------------------------------------------------------


def render(overlay: Path) -> list[dict]:
    out = subprocess.run(
        [str(VENV_BIN / "kubectl"), "kustomize", str(overlay)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def is_custom(doc: dict) -> bool:
    return doc.get("apiVersion", "").startswith(CRD_GROUPS)


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") not in WORKLOAD_KINDS:
        return None
    return doc["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", []),
            *spec.get("ephemeralContainers", [])]


def workloads(docs: list[dict]) -> list[tuple[dict, dict]]:
    return [(d, pod_spec(d)) for d in docs if pod_spec(d) is not None]


# --- label selectors and NetworkPolicies -----------------------------------------------


def selects(selector: dict | None, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class Peer:
    namespace: str
    pod_labels: dict

    @property
    def namespace_labels(self) -> dict:
        return {"kubernetes.io/metadata.name": self.namespace}


def peer_matches(rule_peer: dict, peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in rule_peer:
        return False
    ns_sel, pod_sel = rule_peer.get("namespaceSelector"), rule_peer.get("podSelector")
    if ns_sel is None and peer.namespace != policy_ns:
        return False
    if ns_sel is not None and not selects(ns_sel, peer.namespace_labels):
        return False
    return pod_sel is None or selects(pod_sel, peer.pod_labels)


def port_matches(rule_port: dict, number: int, name: str | None) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    port = rule_port.get("port")
    if port is None:
        return True
    if isinstance(port, str):
        return port == name
    return port <= number <= rule_port.get("endPort", port)


def admitted(policies: list[dict], ns: str, pod_labels: dict, number: int, name: str | None,
             peer: Peer) -> bool:
    """Whether `peer` may open a TCP connection to the pod's port under `policies`."""
    applying = [
        p for p in policies
        if p["metadata"].get("namespace") == ns
        and selects(p["spec"].get("podSelector", {}), pod_labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not applying:
        return True
    for policy in applying:
        for rule in policy["spec"].get("ingress") or []:
            froms, ports = rule.get("from"), rule.get("ports")
            from_ok = not froms or any(peer_matches(f, peer, ns) for f in froms)
            port_ok = not ports or any(port_matches(p, number, name) for p in ports)
            if from_ok and port_ok:
                return True
    return False


def egress_allowed(policies: list[dict], ns: str, pod_labels: dict, target: Peer, number: int,
                   name: str | None) -> bool:
    """Whether the pod (ns, pod_labels) may open a TCP connection to `target`'s port under
    its Egress policies (none: anything). An ipBlock never matches a pod here: pod
    addresses are the cluster's own, which an egress to the internet excludes."""
    applying = [
        p for p in policies
        if p["metadata"].get("namespace") == ns
        and selects(p["spec"].get("podSelector", {}), pod_labels)
        and "Egress" in p["spec"].get("policyTypes", [])
    ]
    if not applying:
        return True
    for policy in applying:
        for rule in policy["spec"].get("egress") or []:
            tos, ports = rule.get("to"), rule.get("ports")
            to_ok = not tos or any(peer_matches(t, target, ns) for t in tos)
            port_ok = not ports or any(port_matches(p, number, name) for p in ports)
            if to_ok and port_ok:
                return True
    return False


# --- rules over the rendered objects ------------------------------------------------------


def rule_builtin_schemas(overlay: str, docs: list[dict], report: Report) -> None:
    """Built-in kinds validate strictly against the Kubernetes schemas."""
    import kubernetes_validate

    for doc in docs:
        if is_custom(doc):
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            report.fail(ident(overlay, doc), f"Kubernetes {KUBERNETES_VERSION} schema",
                        f"{path}: {error.message}")
        except Exception as error:  # SchemaNotFoundError and friends
            report.fail(ident(overlay, doc), f"Kubernetes {KUBERNETES_VERSION} schema", str(error))


def _crd_models() -> dict[tuple[str, str], type]:
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    return {
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
        ("monitoring.coreos.com/v1", "PodMonitor"): monitoring.PodMonitor,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
        ("cert-manager.io/v1", "Issuer"): cert_manager.Issuer,
        ("cert-manager.io/v1", "ClusterIssuer"): cert_manager.ClusterIssuer,
        ("cert-manager.io/v1", "Certificate"): cert_manager.Certificate,
    }


def unknown_fields(given, kept, path="") -> list[str]:
    """Paths present in `given` that the model did not keep (it drops unknown fields)."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return []
        found = []
        for key, value in given.items():
            if key not in kept:
                found.append(f"{path}.{key}".lstrip("."))
            else:
                found.extend(unknown_fields(value, kept[key], f"{path}.{key}"))
        return found
    if isinstance(given, list) and isinstance(kept, list):
        return [f for i, (g, k) in enumerate(zip(given, kept))
                for f in unknown_fields(g, k, f"{path}[{i}]")]
    return []


def rule_custom_schemas(overlay: str, docs: list[dict], report: Report) -> None:
    """KEDA, Prometheus Operator and cert-manager kinds validate against their CRD schemas,
    strictly."""
    custom = [d for d in docs if is_custom(d)]
    if not custom:
        return
    models = _crd_models()
    for doc in custom:
        model = models.get((doc["apiVersion"], doc["kind"]))
        if model is None:
            report.fail(ident(overlay, doc), "CRD schema", f"no schema for {doc['apiVersion']} {doc['kind']}")
            continue
        try:
            parsed = model.model_validate(doc)
        except Exception as error:
            report.fail(ident(overlay, doc), "CRD schema", " ".join(str(error).split()))
            continue
        kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
        for path in unknown_fields(doc, kept):
            report.fail(ident(overlay, doc), "CRD schema", f"unknown field {path}")


CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                        "ClusterTriggerAuthentication", "PriorityClass", "StorageClass", "IngressClass"}


def rule_namespaced(overlay: str, docs: list[dict], report: Report) -> None:
    """Every namespaced object is rendered in the overlay's Namespace (the one rendered):
    without a namespace, `kubectl apply -k` puts it in the context's (a component's objects
    get none from the base's kustomization), where a ScaledObject or a budget finds nothing."""
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    for doc in docs:
        if doc["kind"] in CLUSTER_SCOPED_KINDS:
            continue
        ns = doc["metadata"].get("namespace")
        if ns not in namespaces:
            report.fail(ident(overlay, doc), "namespace",
                        f"rendered in namespace {ns!r}, not in {sorted(namespaces)} (set `namespace:` in the overlay)")


def rule_required_by_api_server(overlay: str, docs: list[dict], report: Report) -> None:
    """What the API server rejects although the OpenAPI schema allows it: a container
    without an image, a workload whose selector does not select its own pods."""
    for doc, spec in workloads(docs):
        for c in containers(spec):
            if not c.get("image"):
                report.fail(ident(overlay, doc), "container image", f"container {c.get('name')} has no image")
        selector = doc["spec"].get("selector")
        labels = doc["spec"]["template"].get("metadata", {}).get("labels", {})
        if doc["kind"] != "Job" and not selects(selector, labels):
            report.fail(ident(overlay, doc), "selector", "spec.selector does not match the pod template's labels")


def rule_probes(overlay: str, docs: list[dict], report: Report) -> None:
    """Every long-running container has a liveness and a readiness probe (a Job's run to
    completion: no Service routes to them, and their exit status is their health)."""
    for doc, spec in workloads(docs):
        if doc["kind"] == "Job":
            continue
        for c in spec.get("containers", []):
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    report.fail(ident(overlay, doc), "probes", f"container {c['name']} has no {probe}")


def rule_resources(overlay: str, docs: list[dict], report: Report) -> None:
    """Every container requests CPU and memory and is limited in memory."""
    for doc, spec in workloads(docs):
        for c in containers(spec):
            res = c.get("resources", {})
            for section, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
                if key not in res.get(section, {}):
                    report.fail(ident(overlay, doc), "resources", f"container {c['name']} has no {section}.{key}")


def _effective(spec: dict, c: dict, key: str):
    """A container's security setting, falling back to the pod's."""
    own = (c.get("securityContext") or {}).get(key)
    return own if own is not None else (spec.get("securityContext") or {}).get(key)


def rule_seccomp_runtime_default(overlay: str, docs: list[dict], report: Report) -> None:
    """Every container runs with the RuntimeDefault seccomp profile."""
    for doc, spec in workloads(docs):
        for c in containers(spec):
            profile = _effective(spec, c, "seccompProfile") or {}
            if profile.get("type") != "RuntimeDefault":
                report.fail(ident(overlay, doc), "seccompProfile RuntimeDefault",
                            f"container {c['name']} has seccompProfile {profile.get('type')}")


def rule_run_as_non_root(overlay: str, docs: list[dict], report: Report) -> None:
    """Every container runs as non-root (runAsNonRoot, and no runAsUser 0)."""
    for doc, spec in workloads(docs):
        for c in containers(spec):
            if _effective(spec, c, "runAsNonRoot") is not True:
                report.fail(ident(overlay, doc), "runAsNonRoot", f"container {c['name']} may run as root")
            if _effective(spec, c, "runAsUser") == 0:
                report.fail(ident(overlay, doc), "runAsNonRoot", f"container {c['name']} has runAsUser 0")


def rule_read_only_root_filesystem(overlay: str, docs: list[dict], report: Report) -> None:
    """Every container's root filesystem is read-only."""
    for doc, spec in workloads(docs):
        for c in containers(spec):
            if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
                report.fail(ident(overlay, doc), "readOnlyRootFilesystem", f"container {c['name']} can write its root filesystem")


def rule_capabilities_dropped(overlay: str, docs: list[dict], report: Report) -> None:
    """Every container drops ALL capabilities and escalates no privilege."""
    for doc, spec in workloads(docs):
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
                report.fail(ident(overlay, doc), "capabilities", f"container {c['name']} does not drop ALL")
            if sc.get("allowPrivilegeEscalation") is not False:
                report.fail(ident(overlay, doc), "capabilities", f"container {c['name']} allows privilege escalation")


def rule_pod_security_restricted(overlay: str, docs: list[dict], report: Report) -> None:
    """The rest of Pod Security "restricted" (the namespace enforces it): no host
    namespaces, ports or paths, no privileged containers, only the allowed volume types,
    capabilities added (NET_BIND_SERVICE at most), sysctls, SELinux, /proc and AppArmor."""
    rule = "Pod Security restricted"
    for ns in (d for d in docs if d["kind"] == "Namespace"):
        labels = ns["metadata"].get("labels", {})
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            report.fail(ident(overlay, ns), rule, "the namespace does not enforce restricted")
    for doc, spec in workloads(docs):
        where = ident(overlay, doc)
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key) is True:
                report.fail(where, rule, f"{key} is set")
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            if not kinds <= RESTRICTED_VOLUME_TYPES:
                report.fail(where, rule, f"volume {volume['name']} is of type {sorted(kinds)}")
        pod_sc = spec.get("securityContext") or {}
        for sysctl in pod_sc.get("sysctls", []):
            if sysctl["name"] not in SAFE_SYSCTLS:
                report.fail(where, rule, f"sysctl {sysctl['name']} is not in the safe set")
        contexts = [("the pod", pod_sc)] + [(f"container {c['name']}", c.get("securityContext") or {})
                                             for c in containers(spec)]
        for who, ctx in contexts:
            se = ctx.get("seLinuxOptions") or {}
            if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
                report.fail(where, rule, f"{who} sets seLinuxOptions {se}")
            if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
                report.fail(where, rule, f"{who} runs unconfined by AppArmor")
            if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
                report.fail(where, rule, f"{who} runs without seccomp")
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            if sc.get("privileged") is True:
                report.fail(where, rule, f"container {c['name']} is privileged")
            added = set((sc.get("capabilities") or {}).get("add", []))
            if added - {"NET_BIND_SERVICE"}:
                report.fail(where, rule, f"container {c['name']} adds {sorted(added)}")
            for port in c.get("ports", []):
                if port.get("hostPort"):
                    report.fail(where, rule, f"container {c['name']} uses hostPort {port['hostPort']}")
            if sc.get("procMount", "Default") != "Default":
                report.fail(where, rule, f"container {c['name']} sets procMount")


def rule_grace_outlasts_drain(overlay: str, docs: list[dict], report: Report) -> None:
    """A service's termination grace period outlasts SB_DRAIN_DEADLINE_SECS, so a drain
    finishes before the kubelet kills the pod."""
    config = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "switchboard"), None)
    if config is None:
        report.fail(f"{overlay}/ConfigMap/switchboard", "drain deadline", "missing")
        return
    deadline = int(config["data"].get("SB_DRAIN_DEADLINE_SECS", "20"))
    for doc, spec in workloads(docs):
        uses_config = any(
            (src.get("configMapRef") or {}).get("name") == "switchboard"
            for c in spec.get("containers", []) for src in c.get("envFrom", [])
        )
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if uses_config and grace <= deadline:
            report.fail(ident(overlay, doc), "drain deadline",
                        f"terminationGracePeriodSeconds {grace} <= SB_DRAIN_DEADLINE_SECS {deadline}")


def _service_targets(docs: list[dict], service: dict):
    """(workload, pod labels, container port number, port name) behind each Service port."""
    for port in service["spec"].get("ports", []):
        target = port.get("targetPort", port["port"])
        for doc, spec in workloads(docs):
            labels = doc["spec"]["template"]["metadata"].get("labels", {})
            if not selects({"matchLabels": service["spec"].get("selector", {})}, labels):
                continue
            for c in spec.get("containers", []):
                for cp in c.get("ports", []):
                    if target in (cp.get("name"), cp["containerPort"]):
                        yield port, doc, labels, cp["containerPort"], cp.get("name")


def rule_network_paths(overlay: str, docs: list[dict], report: Report) -> None:
    """Every Service port is reachable by its real callers (CALLERS) and by nobody else
    that CALLERS knows of (a namespace without a default deny fails here): the target's
    Ingress policies admit the caller and, for a caller in the overlay, the caller's own
    Egress policies (the dialer's) let it out to that port."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = {d["metadata"]["name"]: (d["metadata"].get("namespace"), d["spec"]["template"]["metadata"].get("labels", {}))
            for d, _ in workloads(docs)}

    def peer(caller: str) -> Peer | None:
        if caller in EXTERNAL_CALLERS:
            ns, labels = EXTERNAL_CALLERS[caller]
            return Peer(ns, labels)
        if caller in pods:
            return Peer(*pods[caller])
        return None

    everyone = set(EXTERNAL_CALLERS) | set(pods)
    for service in (d for d in docs if d["kind"] == "Service"):
        name = service["metadata"]["name"]
        ns = service["metadata"].get("namespace")
        for port, doc, labels, number, port_name in _service_targets(docs, service):
            key = (name, port.get("name"))
            if key not in CALLERS:
                report.fail(ident(overlay, service), "network paths",
                            f"port {port.get('name')} has no callers in CALLERS (.ci/deploy_check.py)")
                continue
            for caller in sorted(everyone):
                p = peer(caller)
                wanted = caller in CALLERS[key]
                if p is None:
                    continue
                reaches = admitted(policies, ns, labels, number, port_name, p)
                if caller in pods:  # its own egress policies too (external ones: not ours)
                    reaches = reaches and egress_allowed(policies, p.namespace, p.pod_labels,
                                                         Peer(ns, labels), number, port_name)
                if reaches != wanted:
                    verdict = "cannot reach" if wanted else "can reach"
                    report.fail(ident(overlay, service), "network paths",
                                f"{caller} ({p.namespace}) {verdict} port {port.get('name')} ({number})")
        for caller in {c for (svc, _), callers in CALLERS.items() if svc == name for c in callers}:
            if peer(caller) is None:
                report.fail(ident(overlay, service), "network paths", f"caller {caller} is not rendered")


def _floors(docs: list[dict]) -> dict[str, int]:
    """Each workload's fewest replicas: its autoscaler's floor, else its replica count."""
    floors = {d["metadata"]["name"]: d["spec"].get("replicas", 1) for d, _ in workloads(docs)}
    for d in docs:
        if d["kind"] == "HorizontalPodAutoscaler":
            floors[d["spec"]["scaleTargetRef"]["name"]] = d["spec"].get("minReplicas", 1)
        if d["kind"] == "ScaledObject":
            floors[d["spec"]["scaleTargetRef"]["name"]] = d["spec"].get("minReplicaCount", 0)
    return floors


def rule_disruption_budgets(overlay: str, docs: list[dict], report: Report) -> None:
    """A PodDisruptionBudget never blocks a node drain: it bounds maxUnavailable (not
    minAvailable) and exists only for workloads with at least two replicas."""
    floors = _floors(docs)
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        where = ident(overlay, pdb)
        if "minAvailable" in pdb["spec"]:
            report.fail(where, "disruption budget", "uses minAvailable (blocks drains at the floor); use maxUnavailable")
        if pdb["spec"].get("maxUnavailable") in (None, 0, "0%"):
            report.fail(where, "disruption budget", "maxUnavailable is not at least 1")
        targets = [d for d, _ in workloads(docs)
                   if selects(pdb["spec"].get("selector"), d["spec"]["template"]["metadata"].get("labels", {}))]
        if not targets:
            report.fail(where, "disruption budget", "selects no workload")
        for t in targets:
            if floors[t["metadata"]["name"]] < 2:
                report.fail(where, "disruption budget",
                            f"{t['kind']}/{t['metadata']['name']} can run one replica: no budget there")


def rule_budget_per_replicated_workload(overlay: str, docs: list[dict], report: Report) -> None:
    """Every Deployment that runs two replicas or more (its autoscaler's floor, else its
    count) has a PodDisruptionBudget: a node drain then takes its pods one at a time (a
    new service added to the autoscalers but not to disruption.yaml fails here)."""
    floors = _floors(docs)
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for doc, _ in workloads(docs):
        if doc["kind"] != "Deployment" or floors[doc["metadata"]["name"]] < 2:
            continue
        labels = doc["spec"]["template"]["metadata"].get("labels", {})
        if not any(p["metadata"].get("namespace") == doc["metadata"].get("namespace")
                   and selects(p["spec"].get("selector"), labels) for p in pdbs):
            report.fail(ident(overlay, doc), "disruption budget",
                        f"runs {floors[doc['metadata']['name']]} replicas or more and no PodDisruptionBudget selects it")


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9,
             "kb": 1e3, "mb": 2**20, "gb": 2**30}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(quantity))
    if not m:
        raise ValueError(quantity)
    return float(m.group(1)) * units.get(m.group(2), 1)


def _redis_forks(args: list[str]) -> bool:
    """Whether a redis-server with these arguments forks: an AOF rewrite (`--appendonly
    yes`) or an RDB snapshot (any `--save` but `""`; Redis saves by default)."""
    def arg(name: str, default: str) -> str:
        return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else default

    return arg("--appendonly", "no") == "yes" or arg("--save", "default") != ""


def rule_redis_memory_headroom(overlay: str, docs: list[dict], report: Report) -> None:
    """A Redis that persists (AOF or RDB) has a memory limit at least twice its maxmemory:
    the rewrite or snapshot forks, and the child's copy-on-write pages count against the
    same limit. One that does not (the TTS cache) still needs REDIS_NO_FORK_MARGIN over
    maxmemory for buffers and fragmentation."""
    for doc, spec in workloads(docs):
        for c in spec.get("containers", []):
            args = [str(a) for a in c.get("args", [])]
            if "--maxmemory" not in args:
                continue
            maxmemory = _bytes(args[args.index("--maxmemory") + 1])
            limit = (c.get("resources", {}).get("limits") or {}).get("memory")
            if _redis_forks(args):
                factor, why = 2, "twice maxmemory (it persists, so it forks)"
            else:
                factor, why = REDIS_NO_FORK_MARGIN, f"{REDIS_NO_FORK_MARGIN}× maxmemory"
            if limit is None or _bytes(limit) < factor * maxmemory:
                report.fail(ident(overlay, doc), "Redis memory headroom",
                            f"memory limit {limit} is under {why}: {factor * maxmemory / 2**20:.0f} Mi")


def rule_public_host(overlay: str, docs: list[dict], report: Report) -> None:
    """The overlay sets its public URL (SB_PUBLIC_URL) and the Ingress serves that host;
    the base's placeholder and the documentation domains never reach a cluster."""
    config = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "switchboard"), {})
    url = config.get("data", {}).get("SB_PUBLIC_URL", "")
    host = url.split("/")[2] if url.startswith("https://") else ""
    where = f"{overlay}/ConfigMap/switchboard"
    if not host:
        report.fail(where, "public host", f"SB_PUBLIC_URL {url!r} is not an https URL")
    if host.endswith(".invalid") or host in ("example.com", "voice.example.com") or host.endswith(".example.com"):
        report.fail(where, "public host", f"SB_PUBLIC_URL host {host!r} is a placeholder: set it in the overlay")
    for ing in (d for d in docs if d["kind"] == "Ingress"):
        hosts = {r.get("host") for r in ing["spec"].get("rules", [])}
        hosts |= {h for t in ing["spec"].get("tls", []) for h in t.get("hosts", [])}
        if hosts != {host}:
            report.fail(ident(overlay, ing), "public host", f"serves {sorted(hosts)}, SB_PUBLIC_URL says {host!r}")


def rule_local_overlay_builtin_only(overlay: str, docs: list[dict], report: Report) -> None:
    """A local cluster's overlay uses no custom resource (kind and minikube lack the CRDs)."""
    if overlay not in LOCAL_OVERLAYS:
        return
    for doc in docs:
        if is_custom(doc):
            report.fail(ident(overlay, doc), "local overlay", f"{doc['apiVersion']} needs a CRD a local cluster lacks")


def rule_metrics_ports_monitored(overlay: str, docs: list[dict], report: Report) -> None:
    """In a monitored overlay, a PodMonitor scrapes every metrics port (a container port
    named http or metrics), and the alert rules are deployed."""
    if overlay not in MONITORED_OVERLAYS:
        return
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    if not any(d["kind"] == "PrometheusRule" for d in docs):
        report.fail(f"{overlay}/PrometheusRule", "monitoring", "no alert rules")
    for doc, spec in workloads(docs):
        labels = doc["spec"]["template"]["metadata"].get("labels", {})
        for c in spec.get("containers", []):
            for cp in c.get("ports", []):
                if cp.get("name") not in ("http", "metrics"):
                    continue
                if not any(selects(m["spec"].get("selector"), labels)
                           and any(e.get("port") == cp["name"] for e in m["spec"].get("podMetricsEndpoints", []))
                           for m in monitors):
                    report.fail(ident(overlay, doc), "monitoring", f"no PodMonitor scrapes port {cp['name']}")


def rule_autoscalers_target_workloads(overlay: str, docs: list[dict], report: Report) -> None:
    """Every HPA and ScaledObject scales a workload this overlay renders, which then
    states no replica count of its own (`kubectl apply` would reset the autoscaler's)."""
    names = {d["metadata"]["name"]: d for d, _ in workloads(docs)}
    for d in docs:
        if d["kind"] not in ("HorizontalPodAutoscaler", "ScaledObject"):
            continue
        target = names.get(d["spec"]["scaleTargetRef"]["name"])
        if target is None:
            report.fail(ident(overlay, d), "autoscaler", f"scales {d['spec']['scaleTargetRef']['name']}, which is not rendered")
        elif "replicas" in target["spec"]:
            report.fail(ident(overlay, d), "autoscaler",
                        f"{target['kind']}/{target['metadata']['name']} also sets replicas: every apply resets the count")


def _workflow_env(name: str) -> tuple[str, list[str]]:
    """The deploy workflow's text and the words of its deploy job's env var `name`."""
    text = DEPLOY_WORKFLOW.read_text()
    jobs = (yaml.safe_load(text) or {}).get("jobs") or {}
    words = [w for job in jobs.values() for w in str((job.get("env") or {}).get(name, "")).split()]
    return text, words


def rule_deploy_workflow_rollouts(overlay: str, docs: list[dict], report: Report) -> None:
    """In an overlay CI deploys (CI_DEPLOYED_OVERLAYS), the deploy workflow waits for every
    Deployment's and StatefulSet's rollout and rolls back every Deployment of the
    Switchboard image: it names each in $DEPLOYMENTS (status and undo) or, for one of
    another image, in a `rollout status deployment/NAME` (a new service left out would
    be deployed unwatched and never rolled back)."""
    if overlay not in CI_DEPLOYED_OVERLAYS:
        return
    text, listed = _workflow_env("DEPLOYMENTS")
    where = _shown(DEPLOY_WORKFLOW)
    for doc, spec in workloads(docs):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind not in ("Deployment", "StatefulSet"):
            continue
        ours = any(_binary(c) is not None for c in containers(spec))
        if kind == "Deployment" and ours:
            if name not in listed:
                report.fail(ident(overlay, doc), "deploy workflow",
                            f"not in DEPLOYMENTS of {where}: its rollout is neither waited for nor undone")
        elif f"rollout status {kind.lower()}/{name}" not in text and not (kind == "Deployment" and name in listed):
            report.fail(ident(overlay, doc), "deploy workflow",
                        f"{where} does not wait for it (`rollout status {kind.lower()}/{name}`)")
    rendered = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    for name in listed:
        if name not in rendered:
            report.fail(f"{overlay}/Deployment/{name}", "deploy workflow",
                        f"named in DEPLOYMENTS of {where} but not rendered")


# --- NATS logins, secrets, streams and TLS -------------------------------------------------


def _shown(path: Path) -> str:
    """A path as a failure names it: from the repository root when it is inside."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def nats_accounts() -> dict[str, dict[str, dict]]:
    """{account: {user: permissions}} of the generated Helm values (deploy/nats/auth-values.yaml)."""
    doc = yaml.safe_load(AUTH_VALUES.read_text())
    accounts = ((doc.get("config") or {}).get("merge") or {}).get("accounts") or {}
    return {name: {u["user"]: u.get("permissions") or {} for u in (account or {}).get("users") or []}
            for name, account in accounts.items()}


def nats_users() -> dict[str, dict]:
    return {user: perms for users in nats_accounts().values() for user, perms in users.items()}


def _image_name(image: str) -> str:
    """`ghcr.io/org/switchboard:0.1.0` → `switchboard`."""
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


def _binary(c: dict) -> str | None:
    """The Switchboard binary a container runs (its command's, else the image's CMD), or
    None for a container of another image."""
    if _image_name(c.get("image", "")) != SWITCHBOARD_IMAGE:
        return None
    command = c.get("command") or [f"/usr/local/bin/{IMAGE_DEFAULT_BINARY}"]
    return command[0].rsplit("/", 1)[-1]


def nats_clients(docs: list[dict]):
    """(workload, pod spec, container, binary) of every container that logs in to NATS: the
    services' and the operator's (`switchboard`) binaries."""
    for doc, spec in workloads(docs):
        for c in containers(spec):
            binary = _binary(c)
            if binary in SERVICE_BINARIES or binary == OPS_BINARY:
                yield doc, spec, c, binary


def _env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env") or []}


def _secret_ref(entry: dict | None) -> dict | None:
    return ((entry or {}).get("valueFrom") or {}).get("secretKeyRef")


def rule_nats_login(overlay: str, docs: list[dict], report: Report) -> None:
    """Every Switchboard service logs in to NATS as its role's user (SB_NATS_USER), one the
    generated server config (deploy/nats/auth-values.yaml) defines with non-empty publish
    and subscribe allow lists, with that user's password from a Secret (SB_NATS_PASSWORD,
    secretKeyRef to SB_NATS_PASSWORD_<USER>, not optional); the topology Job likewise as
    `ops` (SB_NATS_OPS_USER, default ops; SB_NATS_PASSWORD_OPS)."""
    rule = "NATS login"
    users = nats_users()
    for doc, _, c, binary in nats_clients(docs):
        where, env = ident(overlay, doc), _env(c)
        who = f"container {c['name']}"
        if binary == OPS_BINARY:
            user_var, password_var = "SB_NATS_OPS_USER", "SB_NATS_PASSWORD_OPS"
            user, expected = (env.get(user_var) or {}).get("value", "ops"), "ops"
        else:
            user_var, password_var = "SB_NATS_USER", "SB_NATS_PASSWORD"
            user, expected = (env.get(user_var) or {}).get("value"), binary
            if user is None:
                report.fail(where, rule, f"{who} sets no literal {user_var} (its NATS user, {binary!r})")
                continue
        if user != expected:
            report.fail(where, rule, f"{who} ({binary}) logs in as {user!r}, not as its role's user {expected!r}")
        perms = users.get(user)
        if perms is None:
            report.fail(where, rule, f"{who}: {user_var} {user!r} is not a user of {_shown(AUTH_VALUES)}")
        else:
            for op in ("publish", "subscribe"):
                if not ((perms.get(op) or {}).get("allow")):
                    report.fail(where, rule, f"{who}: user {user!r} has no {op} allow list in "
                                             f"{_shown(AUTH_VALUES)}")
        ref = _secret_ref(env.get(password_var))
        if ref is None:
            report.fail(where, rule, f"{who}: {password_var} does not come from a Secret (secretKeyRef)")
            continue
        if ref.get("optional") is True:
            report.fail(where, rule, f"{who}: {password_var} is optional (the pod would start without it)")
        if ref.get("key") != f"SB_NATS_PASSWORD_{user.upper()}":
            report.fail(where, rule, f"{who}: {password_var} is key {ref.get('key')!r} of Secret "
                                     f"{ref.get('name')}, not SB_NATS_PASSWORD_{user.upper()}")


def rule_keda_nats_account(overlay: str, docs: list[dict], report: Report) -> None:
    """Every KEDA nats-jetstream trigger reads the account the streams live in: one of
    deploy/nats/auth-values.yaml (with users defined, `$G` holds nothing)."""
    accounts = set(nats_accounts())
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        for trigger in so["spec"].get("triggers") or []:
            if trigger.get("type") != "nats-jetstream":
                continue
            account = (trigger.get("metadata") or {}).get("account")
            if account not in accounts:
                report.fail(ident(overlay, so), "KEDA NATS account",
                            f"account {account!r} is not one of {sorted(accounts)} ({_shown(AUTH_VALUES)})")


def redis_fixed_keys() -> set[str]:
    """The Redis keys services/runtime/src/redis/keys.rs names without a placeholder
    (`format!("{}cq:tenants", self.prefix)` → `cq:tenants`): what a KEDA trigger can read."""
    return set(re.findall(r'format!\(\s*"\{\}([^"{}]+)",\s*self\.prefix\s*\)', REDIS_KEYS_RS.read_text()))


def rule_keda_redis(overlay: str, docs: list[dict], report: Report) -> None:
    """Every KEDA `redis` trigger reads the state Redis (STATE_REDIS_SERVICE, a rendered
    Service and one of its ports), a key that keys.rs defines (SB_REDIS_KEY_PREFIX is empty
    in a deployment), with no literal password: `authenticationRef` names a rendered
    TriggerAuthentication that takes `password` from a Secret."""
    rule = "KEDA redis"
    services = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs if d["kind"] == "Service"}
    auths = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d["kind"] == "TriggerAuthentication"}
    keys = redis_fixed_keys()
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        ns, where = so["metadata"].get("namespace"), ident(overlay, so)
        for trigger in so["spec"].get("triggers") or []:
            if trigger.get("type") != "redis":
                continue
            meta = trigger.get("metadata") or {}
            for literal in ("password", "username"):
                if literal in meta:
                    report.fail(where, rule, f"metadata.{literal} is a literal; use a TriggerAuthentication")
            host, _, port = str(meta.get("address", "")).rpartition(":")
            name, svc_ns = (host.split(".") + [ns])[:2]
            service = services.get((svc_ns, name))
            if name != STATE_REDIS_SERVICE:
                report.fail(where, rule, f"address {meta.get('address')!r} is not the state Redis "
                                         f"(Service {STATE_REDIS_SERVICE})")
            elif service is None or not any(str(p["port"]) == port for p in service["spec"].get("ports", [])):
                report.fail(where, rule, f"address {meta.get('address')!r}: no rendered Service {svc_ns}/{name} "
                                         f"with port {port}")
            if meta.get("listName") not in keys:
                report.fail(where, rule, f"listName {meta.get('listName')!r} is not a key of {_shown(REDIS_KEYS_RS)}")
            ref = (trigger.get("authenticationRef") or {}).get("name")
            auth = auths.get((ns, ref))
            if auth is None:
                report.fail(where, rule, f"authenticationRef {ref!r} is not a rendered TriggerAuthentication "
                                         f"(the Redis requires a password)")
            elif not any(t.get("parameter") == "password" and t.get("name") and t.get("key")
                         for t in auth["spec"].get("secretTargetRef") or []):
                report.fail(ident(overlay, auth), rule, "gives no `password` from a Secret (secretTargetRef)")


def rule_keda_prometheus_metrics(overlay: str, docs: list[dict], report: Report) -> None:
    """Every switchboard_* metric a KEDA `prometheus` trigger queries is one the code
    exports (a misspelt name reads as no series: the scaler would never scale)."""
    exported = exported_metrics()
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        for trigger in so["spec"].get("triggers") or []:
            if trigger.get("type") != "prometheus":
                continue
            for name in re.findall(r"\bswitchboard_[a-z_]+", str((trigger.get("metadata") or {}).get("query", ""))):
                if name not in exported:
                    report.fail(ident(overlay, so), "KEDA prometheus", f"{name} is not exported ({_shown(METRICS_RS)})")


def _secret_looking(name: str) -> bool:
    return bool(SECRET_ENV.search(name)) or name in SECRET_ENV_NAMES


def rule_no_literal_secrets(overlay: str, docs: list[dict], report: Report) -> None:
    """No secret is written in a manifest: an env var that looks like one (SECRET_ENV,
    SECRET_ENV_NAMES) comes from a Secret, never a literal or a ConfigMap; no ConfigMap key
    looks like one; no literal value is a URL with a password in it; `--requirepass`
    takes an env reference."""
    rule = "no literal secrets"
    for doc, spec in workloads(docs):
        where = ident(overlay, doc)
        for c in containers(spec):
            for e in c.get("env") or []:
                name, who = e["name"], f"container {c['name']}: {e['name']}"
                if _secret_looking(name):
                    if "value" in e:
                        report.fail(where, rule, f"{who} is a literal value; take it from a Secret (secretKeyRef)")
                    elif _secret_ref(e) is None:
                        report.fail(where, rule, f"{who} does not come from a Secret")
                if URL_WITH_PASSWORD.search(str(e.get("value", ""))):
                    report.fail(where, rule, f"{who} is a URL with a password in it")
            args = [str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])]]
            for i, arg in enumerate(args[:-1]):
                if arg == "--requirepass" and not re.fullmatch(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", args[i + 1]):
                    report.fail(where, rule, f"container {c['name']}: --requirepass is a literal; use $(ENV) from a Secret")
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            if _secret_looking(key):
                report.fail(ident(overlay, cm), rule, f"key {key} looks like a secret: put it in a Secret")
            if URL_WITH_PASSWORD.search(str(value)):
                report.fail(ident(overlay, cm), rule, f"key {key} holds a URL with a password in it")


def rule_config_maps_resolve(overlay: str, docs: list[dict], report: Report) -> None:
    """Every ConfigMap a workload mounts or reads (volume, envFrom, configMapKeyRef) is
    rendered in the workload's namespace (a generator without the namespace, or a name
    kustomize did not rewrite, leaves a reference to nothing)."""
    rendered = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs if d["kind"] == "ConfigMap"}
    for doc, spec in workloads(docs):
        ns = doc["metadata"].get("namespace")
        refs = [(v["configMap"], f"volume {v['name']}") for v in spec.get("volumes", []) if "configMap" in v]
        for c in containers(spec):
            refs += [(src["configMapRef"], f"container {c['name']} envFrom")
                     for src in c.get("envFrom") or [] if "configMapRef" in src]
            refs += [(e["valueFrom"]["configMapKeyRef"], f"container {c['name']} env {e['name']}")
                     for e in c.get("env") or [] if "configMapKeyRef" in (e.get("valueFrom") or {})]
        for ref, who in refs:
            if not ref.get("optional") and (ns, ref.get("name")) not in rendered:
                report.fail(ident(overlay, doc), "ConfigMap references",
                            f"{who} names ConfigMap {ref.get('name')!r}, not rendered in namespace {ns}")


def _stream_settings(docs: list[dict]):
    """(the topology Job, its overrides path, the rendered ConfigMap that holds the file,
    the file's text) for the Job running `switchboard topology … --overrides PATH`."""
    for doc, spec in workloads(docs):
        for c in containers(spec):
            args = [str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])]]
            if _binary(c) != OPS_BINARY or "topology" not in args or "--overrides" not in args:
                continue
            path = args[args.index("--overrides") + 1] if args.index("--overrides") + 1 < len(args) else ""
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for m in c.get("volumeMounts") or []:
                prefix = m["mountPath"].rstrip("/") + "/"
                volume = volumes.get(m["name"], {})
                if not path.startswith(prefix) or "configMap" not in volume:
                    continue
                name, key = volume["configMap"]["name"], path[len(prefix):]
                cm = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name), None)
                text = (cm or {}).get("data", {}).get(key)
                yield doc, c, path, cm, text
                break
            else:
                yield doc, c, path, None, None


def _parse_stream_settings(text: str) -> tuple[dict | None, list[str]]:
    """The overrides TOML as `runtime::reconcile::Overrides` reads it, and what is wrong."""
    import tomllib

    try:
        settings = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return None, [f"not TOML: {error}"]
    problems = [f"unknown table [{k}]" for k in settings if k not in ("all", "streams")]
    known = {p.stem for p in NATS_STREAMS.glob("*.json")}
    tables = [("all", settings.get("all") or {})]
    tables += [(f"streams.{n}", t) for n, t in (settings.get("streams") or {}).items()]
    for name, table in tables:
        if name.startswith("streams.") and name[len("streams."):] not in known:
            problems.append(f"[{name}]: no such stream in nats/streams/ ({', '.join(sorted(known))})")
        for key, value in table.items():
            if key not in STREAM_SETTING_KEYS:
                problems.append(f"[{name}] {key}: not one of {', '.join(STREAM_SETTING_KEYS)}")
            elif key == "storage" and value not in ("file", "memory"):
                problems.append(f"[{name}] storage = {value!r}: file or memory")
            elif key != "storage" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                problems.append(f"[{name}] {key} = {value!r}: not a non-negative integer")
    return settings, problems


def rule_stream_settings(overlay: str, docs: list[dict], report: Report) -> None:
    """The overlay runs the topology Job, and its --overrides file is a key of a rendered
    ConfigMap (the overlay's streams.toml) that parses as the operator reads it: tables
    [all] and [streams.<a stream of nats/streams/>], fields replicas, storage (file,
    memory), max_age_secs, max_bytes."""
    rule = "stream settings"
    found = list(_stream_settings(docs))
    if not found:
        report.fail(f"{overlay}/Job/topology", rule, "no Job runs `switchboard topology apply --overrides …`")
    checked = set()
    for doc, c, path, cm, text in found:
        where = ident(overlay, doc)
        if text is None:
            report.fail(where, rule, f"container {c['name']}: --overrides {path} is not a key of a rendered ConfigMap")
            continue
        if (cm["metadata"]["name"], path) in checked:
            continue
        checked.add((cm["metadata"]["name"], path))
        for problem in _parse_stream_settings(text)[1]:
            report.fail(ident(overlay, cm), rule, f"{path.rsplit('/', 1)[-1]}: {problem}")


def rule_streams_replicated(overlay: str, docs: list[dict], report: Report) -> None:
    """Where STREAM_REPLICAS requires it (prod: R3), the overlay's streams.toml gives every
    stream of nats/streams/ that many replicas ([streams.X] over [all] over the JSON)."""
    wanted = STREAM_REPLICAS.get(overlay)
    if wanted is None:
        return
    checked = set()
    for _, _, path, cm, text in _stream_settings(docs):
        if text is None or (cm["metadata"]["name"], path) in checked:
            continue  # rule_stream_settings reports a missing file
        checked.add((cm["metadata"]["name"], path))
        settings, _ = _parse_stream_settings(text)
        settings = settings or {}
        for path in sorted(NATS_STREAMS.glob("*.json")):
            name = path.stem
            replicas = ((settings.get("streams") or {}).get(name) or {}).get(
                "replicas", (settings.get("all") or {}).get("replicas", json.loads(path.read_text()).get("num_replicas", 1)))
            if replicas != wanted:
                report.fail(ident(overlay, cm), "stream replicas",
                            f"stream {name} gets {replicas} replica(s) from streams.toml; {overlay} requires {wanted}")


def rule_nats_tls(overlay: str, docs: list[dict], report: Report) -> None:
    """Where NATS serves TLS (NATS_TLS_OVERLAYS: staging and prod), every NATS client (the
    services, the topology Job) sets SB_NATS_TLS_CA to a file of a read-only Secret volume."""
    if overlay not in NATS_TLS_OVERLAYS:
        return
    rule = "NATS TLS"
    for doc, spec, c, _ in nats_clients(docs):
        where, who = ident(overlay, doc), f"container {c['name']}"
        path = (_env(c).get("SB_NATS_TLS_CA") or {}).get("value")
        if not path:
            report.fail(where, rule, f"{who} sets no SB_NATS_TLS_CA: it would talk to NATS without verifying it")
            continue
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = [m for m in c.get("volumeMounts") or [] if path.startswith(m["mountPath"].rstrip("/") + "/")]
        if not any(m.get("readOnly") is True and "secret" in volumes.get(m["name"], {}) for m in mounts):
            report.fail(where, rule, f"{who}: SB_NATS_TLS_CA {path} is not in a read-only Secret volume")


MANIFEST_RULES = [
    rule_builtin_schemas,
    rule_custom_schemas,
    rule_namespaced,
    rule_required_by_api_server,
    rule_probes,
    rule_resources,
    rule_seccomp_runtime_default,
    rule_run_as_non_root,
    rule_read_only_root_filesystem,
    rule_capabilities_dropped,
    rule_pod_security_restricted,
    rule_grace_outlasts_drain,
    rule_network_paths,
    rule_disruption_budgets,
    rule_budget_per_replicated_workload,
    rule_redis_memory_headroom,
    rule_public_host,
    rule_local_overlay_builtin_only,
    rule_metrics_ports_monitored,
    rule_autoscalers_target_workloads,
    rule_deploy_workflow_rollouts,
    rule_config_maps_resolve,
    rule_nats_login,
    rule_keda_nats_account,
    rule_keda_redis,
    rule_keda_prometheus_metrics,
    rule_no_literal_secrets,
    rule_stream_settings,
    rule_streams_replicated,
    rule_nats_tls,
]


# --- rules over the monitoring sources ----------------------------------------------------


def exported_metrics() -> set[str]:
    return set(re.findall(r'"(switchboard_[a-z_]+)"', METRICS_RS.read_text()))


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [r for g in doc["spec"]["groups"] for r in g["rules"] if "alert" in r]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of every dashboard in monitoring/."""
    found = []
    for path in sorted(MONITORING.glob("*.json")):
        stack = list(json.loads(path.read_text()).get("panels", []))
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((f"{path.name}: panel {panel.get('title')!r}", target.get("expr", "")))
    return found


def rule_metric_names(report: Report) -> None:
    """Every switchboard_* metric an alert or a panel uses is one the code exports (its
    _bucket/_sum/_count series included); every other metric comes from a known exporter."""
    exported = exported_metrics()
    uses = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()] + dashboard_exprs()
    for where, expr in uses:
        for name in re.findall(r"\bswitchboard_[a-z_]+", expr):
            if name not in exported and re.sub(r"_(bucket|sum|count)$", "", name) not in exported:
                report.fail(where, "metric names", f"{name} is not exported (services/runtime/src/metrics.rs)")
        for name in re.findall(r"\b(?:%s)[a-z_]+" % "|".join(EXPORTER_PREFIXES), expr):
            if name not in EXPORTER_METRICS:
                report.fail(where, "metric names", f"{name} is not a metric of a known exporter (EXPORTER_METRICS)")


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    found = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def rule_runbooks(report: Report) -> None:
    """Every alert has a runbook_url into docs/runbook.md whose section exists."""
    known = anchors(RUNBOOK.read_text()) if RUNBOOK.exists() else set()
    for rule in alert_rules():
        url = rule.get("annotations", {}).get("runbook_url", "")
        m = re.search(r"docs/runbook\.md#([\w-]+)$", url)
        if not m:
            report.fail(f"alert {rule['alert']}", "runbook", f"runbook_url {url!r} does not point into docs/runbook.md")
        elif m.group(1) not in known:
            report.fail(f"alert {rule['alert']}", "runbook", f"docs/runbook.md has no section #{m.group(1)}")


def rule_alert_tests(report: Report) -> None:
    """Every alert has a promtool unit test where it fires and one where it stays quiet."""
    tests = yaml.safe_load((MONITORING / "alerts.test.yaml").read_text())["tests"]
    fires, quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    for rule in alert_rules():
        if rule["alert"] not in fires:
            report.fail(f"alert {rule['alert']}", "alert tests", "no test where it fires (alerts.test.yaml)")
        if rule["alert"] not in quiet:
            report.fail(f"alert {rule['alert']}", "alert tests", "no test where it stays quiet (alerts.test.yaml)")


def rule_nats_certificates(report: Report) -> None:
    """deploy/nats/tls.yaml (applied beside the overlays, before NATS' chart): its
    cert-manager kinds validate against the CRD schemas, each Certificate's issuerRef names
    an Issuer of the file in its namespace (or a ClusterIssuer), and the servers'
    certificate covers the name the clients dial (SB_NATS_URL's host)."""
    docs = [d for d in yaml.safe_load_all(NATS_TLS.read_text()) if d]
    where = _shown(NATS_TLS)
    rule_custom_schemas(where, docs, report)
    issuers = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs if d.get("kind") == "Issuer"}
    for cert in (d for d in docs if d.get("kind") == "Certificate"):
        ref = (cert.get("spec") or {}).get("issuerRef") or {}
        if ref.get("kind", "Issuer") == "Issuer" and (cert["metadata"].get("namespace"), ref.get("name")) not in issuers:
            report.fail(ident(where, cert), "cert-manager", f"issuerRef {ref.get('name')!r} is not an Issuer of the file")
    config = next((d for d in yaml.safe_load_all(BASE_CONFIG.read_text())
                   if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "switchboard"), {})
    url = (config.get("data") or {}).get("SB_NATS_URL", "")
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    served = {n for d in docs if d.get("kind") == "Certificate" and not d["spec"].get("isCA")
              for n in d["spec"].get("dnsNames") or []}
    if host not in served:
        report.fail(where, "cert-manager", f"no server Certificate names {host!r}, the host of SB_NATS_URL "
                                           f"({_shown(BASE_CONFIG)}): the clients would refuse NATS' certificate")


SOURCE_RULES = [rule_metric_names, rule_runbooks, rule_alert_tests, rule_nats_certificates]


def main() -> int:
    report = Report()
    overlays = sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())
    for overlay in overlays:
        try:
            docs = render(overlay)
        except RuntimeError as error:
            report.fail(f"{overlay.name}", "kustomize", str(error))
            continue
        for rule in MANIFEST_RULES:
            rule(overlay.name, docs, report)
            report.rules_run += 1
        kinds = sorted({d["kind"] for d in docs})
        print(f"deploy-check: {overlay.name}: {len(docs)} objects rendered ({', '.join(kinds)})")
    for rule in SOURCE_RULES:
        rule(report)
        report.rules_run += 1
    if report.failures:
        for failure in report.failures:
            print(f"FAIL {failure}", file=sys.stderr)
        print(f"deploy-check: {len(report.failures)} failure(s)", file=sys.stderr)
        return 1
    print(f"deploy-check: {len(overlays)} overlays, {len(MANIFEST_RULES)} manifest rules each, "
          f"{len(SOURCE_RULES)} monitoring rules: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
