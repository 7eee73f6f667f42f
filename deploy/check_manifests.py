#!/usr/bin/env python3
"""Checks what the Kubernetes schemas cannot: that a rendered llmint8 overlay hangs together.

Usage: check_manifests.py RENDERED.yaml [--name OVERLAY] [--binary PATH/TO/llmint8] [--self_test]

The schemas (kubernetes-validate) say each object is well-formed; this says the objects agree
with each other and with llmint8's deployment rules:
  - every namespaced object is in the overlay's one namespace;
  - Services, the NetworkPolicy and the PodDisruptionBudget select the pods they are meant for;
  - the workers' NetworkPolicy admits only named sources: the coordinator (to the workers'
    --listen port) and peer workers (to every TCP port: Gloo and NCCL listen on ephemeral
    ones), and no rule admits everyone;
  - the coordinator serves gRPC on 50051 with grpc.health.v1 probes: liveness asks the
    "liveness" service (up while the process runs), readiness "" or llmint8.v1.Generation
    (up while the group serves); the workers' liveness asks "liveness" too, their readiness
    "", both on the --listen port, or on the --health_listen port when there is one;
  - under TLS (the kubelet's probes speak none): a coordinator with --tls_cert_file has an
    httpGet readiness probe on its --metrics_listen port, path /health, and a tcpSocket
    liveness probe on 50051 (and only then may it); workers with --tls_client_ca_file have
    --tls_cert_file, --tls_key_file, --tls_ca_file and --health_listen, a declared port; the
    ports those probes dial listen on the pod's IP (a wildcard host, not 127.0.0.1); both
    sides of each link agree (workers' --tls_client_ca_file <=> coordinator's
    --worker_tls_ca_file, which needs its --tls_cert_file; coordinator's --tls_cert_file <=>
    workers' --tls_ca_file; its --tls_client_ca_file => workers present certificates); every
    TLS file a flag names lies in a Secret volume mounted readOnly, under the kubernetes.io/tls
    key of its kind (tls.crt, tls.key, ca.crt), not world-readable, readable through fsGroup;
  - the workers reach the Rendezvous (--coordinator=, the coordinator's --advertise=) through
    a headless Service that publishes the coordinator before it is ready (it is ready only
    once the group has formed through the Rendezvous); with --rendezvous_listen that Service
    leads to its port, and a NetworkPolicy on the coordinator lets only the workers reach it;
  - each pod's terminationGracePeriodSeconds leaves its --drain_timeout 10 s or more;
  - the workers are a StatefulSet behind a headless Service, and LLMINT8_TP == replicas ==
    the number of LLMINT8_WORKERS addresses, named in rank order; over Gloo each worker
    advertises its pod IP (--gloo_hostname=$(POD_IP) from status.podIP);
  - with --binary: the coordinator's and the workers' command lines, their $(VAR)s expanded
    from the container's env and ConfigMaps, are accepted by that llmint8 (--check_flags:
    every flag the subcommand's, every value valid);
  - every pod runs as non-root with no privilege escalation, every container has CPU/memory
    requests and limits;
  - referenced ConfigMaps, PVCs and the ServiceAccount exist;
  - on GPU (LLMINT8_DEVICE=cuda) each worker gets nvidia.com/gpu and --cuda_device=0 (a pod
    sees its own GPU as device 0), and the plan shipped in llmint8-plan (plan.json from
    `llmint8 plan --json`) agrees with the config.
With --self_test it also breaks copies of the objects in known ways (MUTATIONS; those of a
group under mutual TLS only where the overlay runs one) and checks that each is caught. Prints one line per failed check; exits 1 if any failed.
"""

import argparse
import copy
import json
import re
import subprocess
import sys

import yaml

COORDINATOR_PORT = 50051


class Checker:
    def __init__(self, name):
        self.name = name
        self.failures = []
        self.checks = 0

    def expect(self, ok, message):
        self.checks += 1
        if not ok:
            self.failures.append(message)
        return ok


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_templates(objects):
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            yield o, o["spec"]["template"]


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(c, objects, kind, component):
    found = [o for o in by_kind(objects, kind)
             if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    c.expect(len(found) == 1, f"expected exactly one {kind} for the {component}, got {len(found)}")
    return found[0] if found else None


def container(template, name):
    for ctr in template["spec"]["containers"]:
        if ctr["name"] == name:
            return ctr
    return None


def check_namespaces(c, objects):
    namespaces = [o["metadata"]["name"] for o in by_kind(objects, "Namespace")]
    c.expect(len(namespaces) == 1, f"expected one Namespace object, got {namespaces}")
    for o in objects:
        if o["kind"] == "Namespace":
            continue
        c.expect(o["metadata"].get("namespace") in namespaces,
                 f"{o['kind']}/{o['metadata']['name']} is not in namespace {namespaces}")


def check_security(c, objects):
    sa_names = {o["metadata"]["name"] for o in by_kind(objects, "ServiceAccount")}
    for owner, template in pod_templates(objects):
        what = f"{owner['kind']}/{owner['metadata']['name']}"
        spec = template["spec"]
        psc = spec.get("securityContext", {})
        c.expect(psc.get("runAsNonRoot") is True, f"{what}: pod securityContext.runAsNonRoot")
        c.expect(psc.get("runAsUser", 0) != 0, f"{what}: pod runs as uid 0")
        c.expect(spec.get("serviceAccountName") in sa_names,
                 f"{what}: serviceAccountName {spec.get('serviceAccountName')} not rendered")
        for ctr in spec["containers"]:
            cwhat = f"{what} container {ctr['name']}"
            sc = ctr.get("securityContext", {})
            c.expect(sc.get("allowPrivilegeEscalation") is False,
                     f"{cwhat}: allowPrivilegeEscalation must be false")
            c.expect("ALL" in sc.get("capabilities", {}).get("drop", []),
                     f"{cwhat}: capabilities must drop ALL")
            res = ctr.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    c.expect(r in res.get(kind, {}), f"{cwhat}: resources.{kind}.{r} missing")


def check_references(c, objects):
    configmaps = {o["metadata"]["name"] for o in by_kind(objects, "ConfigMap")}
    pvcs = {o["metadata"]["name"] for o in by_kind(objects, "PersistentVolumeClaim")}
    for owner, template in pod_templates(objects):
        what = f"{owner['kind']}/{owner['metadata']['name']}"
        for vol in template["spec"].get("volumes", []):
            if "configMap" in vol:
                c.expect(vol["configMap"]["name"] in configmaps,
                         f"{what}: volume {vol['name']} names missing ConfigMap")
            if "persistentVolumeClaim" in vol:
                c.expect(vol["persistentVolumeClaim"]["claimName"] in pvcs,
                         f"{what}: volume {vol['name']} names missing PVC")
        for ctr in template["spec"]["containers"]:
            for src in ctr.get("envFrom", []):
                if "configMapRef" in src:
                    c.expect(src["configMapRef"]["name"] in configmaps,
                             f"{what}: envFrom names missing ConfigMap")


def config_data(c, objects, prefix):
    found = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith(prefix)]
    c.expect(len(found) == 1, f"expected one ConfigMap {prefix}-*, got {len(found)}")
    return found[0].get("data", {}) if found else {}


def check_services(c, objects, coordinator, workers):
    for svc in by_kind(objects, "Service"):
        selector = svc["spec"].get("selector", {})
        targets = [t for _, t in pod_templates(objects)
                   if labels_match(selector, t["metadata"].get("labels", {}))]
        c.expect(len(targets) == 1,
                 f"Service/{svc['metadata']['name']} selects {len(targets)} pod templates")
    coord_svc = [s for s in by_kind(objects, "Service")
                 if coordinator and labels_match(s["spec"].get("selector"),
                                                 coordinator["spec"]["template"]["metadata"]["labels"])]
    public = [s for s in coord_svc if s["spec"].get("clusterIP") != "None"]
    if c.expect(len(public) == 1, f"expected one non-headless Service for the coordinator's "
                                  f"clients, got {len(public)}"):
        ports = [p["port"] for p in public[0]["spec"]["ports"]]
        c.expect(COORDINATOR_PORT in ports, f"coordinator Service ports {ports} lack 50051")
    if coordinator and workers:
        check_rendezvous(c, objects, coordinator, workers, coord_svc)
        check_tls_group(c, coordinator, workers)
    if workers:
        headless = [s for s in by_kind(objects, "Service")
                    if s["metadata"]["name"] == workers["spec"].get("serviceName")]
        if c.expect(len(headless) == 1, "StatefulSet serviceName names no rendered Service"):
            c.expect(headless[0]["spec"].get("clusterIP") == "None",
                     "the workers' Service must be headless (clusterIP: None)")


def flag_value(argv, flag):
    """The last value of --flag in argv, as the binary reads it: dashes or underscores in the
    name, one or two leading dashes, `--name=value` or `--name value`."""
    value = None
    names = {flag, flag.replace("_", "-")}
    for i, a in enumerate(argv):
        if not a.startswith("-"):
            continue
        name, eq, rest = a.lstrip("-").partition("=")
        if name not in names:
            continue
        if eq:
            value = rest
        elif i + 1 < len(argv):
            value = argv[i + 1]
    return value


def argv_of(ctr):
    return ctr.get("command", []) + ctr.get("args", [])


def flag_set(argv, flag):
    """Whether --flag is given a non-empty value (empty is the flags' "off")."""
    return bool(flag_value(argv, flag))


def listen_port(argv, flag):
    """The port of a host:port flag's value, None when the flag is off or has no port."""
    port = (flag_value(argv, flag) or "").rpartition(":")[2]
    return int(port) if port.isdigit() else None


def listens_on_pod_ip(argv, flag):
    """Whether a host:port flag's host takes connections to the pod's IP, which the kubelet's
    probes dial: a wildcard (0.0.0.0, ::), none, or $(POD_IP) (the downward API's); 127.0.0.1
    or a name would leave them out."""
    host = (flag_value(argv, flag) or "").rpartition(":")[0].strip("[]")
    return host in ("", "0.0.0.0", "::", "*", "$(POD_IP)")


def container_port(ctr, port):
    """A probe's port as a number: a containerPort's name resolves to the port it names."""
    named = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
    return named.get(port, port)


PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def probe_handler(probe):
    """The one handler of a probe: (kind, its spec), or (None, {}) when it has none or two."""
    handlers = [h for h in PROBE_HANDLERS if h in (probe or {})]
    return (handlers[0], probe[handlers[0]]) if len(handlers) == 1 else (None, {})


def check_coordinator_tls_probes(c, ctr, argv):
    """A coordinator under TLS (--tls_cert_file): the kubelet's grpc probes speak no TLS, so
    readiness asks GET /health on the plain-HTTP metrics port (200 while the group serves, as
    the Generation service's health) and liveness only connects to the gRPC port (it must not
    follow the group: a coordinator waiting for its workers is alive)."""
    metrics = listen_port(argv, "metrics_listen")
    if c.expect(metrics is not None, "a coordinator under TLS (--tls_cert_file) needs "
                                     "--metrics_listen: its readiness probe asks /health there"):
        c.expect(listens_on_pod_ip(argv, "metrics_listen"),
                 "coordinator --metrics_listen must listen on the pod's IP (0.0.0.0): its "
                 "readiness probe dials it there")
        kind, spec = probe_handler(ctr.get("readinessProbe"))
        c.expect(kind == "httpGet" and container_port(ctr, spec.get("port")) == metrics and
                 spec.get("path") == "/health" and spec.get("scheme", "HTTP") == "HTTP",
                 f"coordinator under TLS (--tls_cert_file): readinessProbe must be httpGet on the "
                 f"--metrics_listen port {metrics}, path /health, scheme HTTP (the kubelet's grpc "
                 "probes speak no TLS)")
    kind, spec = probe_handler(ctr.get("livenessProbe"))
    c.expect(kind == "tcpSocket" and container_port(ctr, spec.get("port")) == COORDINATOR_PORT,
             f"coordinator under TLS (--tls_cert_file): livenessProbe must be tcpSocket on port "
             f"{COORDINATOR_PORT} (grpc probes speak no TLS; /health follows the group, and a "
             "coordinator waiting for its workers must not be restarted)")


# The Secret keys of the kubernetes.io/tls layout (as cert-manager writes it) each TLS flag names.
TLS_FILE_FLAGS = {"tls_cert_file": "tls.crt", "tls_key_file": "tls.key", "tls_ca_file": "ca.crt",
                  "tls_client_ca_file": "ca.crt", "worker_tls_ca_file": "ca.crt"}


def check_tls_files(c, owner, ctr):
    """Each TLS file a flag names lies in a Secret volume mounted read-only (the image holds no
    certificates), under the Secret key of its kind (kubernetes.io/tls: tls.crt, tls.key,
    ca.crt), and the files are readable by the pod's user and by nobody else."""
    what = f"{owner['kind']}/{owner['metadata']['name']}"
    spec = owner["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    argv = argv_of(ctr)
    checked = set()
    for flag, want_key in TLS_FILE_FLAGS.items():
        path = flag_value(argv, flag)
        if not path:
            continue
        mounts = [m for m in ctr.get("volumeMounts", [])
                  if path.startswith(m["mountPath"].rstrip("/") + "/")]
        if not c.expect(mounts, f"{what}: --{flag}={path} lies on no volumeMount (mount the "
                                "Secret with the certificates there)"):
            continue
        mount = max(mounts, key=lambda m: len(m["mountPath"]))
        secret = volumes.get(mount["name"], {}).get("secret")
        if not c.expect(secret is not None, f"{what}: --{flag}={path} lies on {mount['mountPath']}, "
                                            "which is not a Secret volume"):
            continue
        rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
        if mount.get("subPath"):
            rel = f"{mount['subPath'].strip('/')}/{rel}"
        items = {i["path"]: i for i in secret.get("items", [])}
        key = items[rel]["key"] if rel in items else (None if items else rel)
        c.expect(key == want_key,
                 f"{what}: --{flag}={path} is Secret {secret.get('secretName')} key {key}, but it "
                 f"expects Secret key {want_key} (kubernetes.io/tls: tls.crt, tls.key, ca.crt)")
        if mount["name"] in checked:
            continue
        checked.add(mount["name"])
        c.expect(mount.get("readOnly") is True,
                 f"{what}: the TLS Secret at {mount['mountPath']} must be mounted readOnly")
        c.expect(secret.get("optional") is not True,
                 f"{what}: the TLS Secret {secret.get('secretName')} must not be optional (the pod "
                 "would start without its certificates)")
        modes = [secret.get("defaultMode", 0o644)] + [i["mode"] for i in items.values() if "mode" in i]
        open_modes = [m for m in modes if m & 0o007]
        c.expect(not open_modes,
                 f"{what}: Secret volume {mount['name']} mode {open_modes[0] if open_modes else 0:04o} "
                 "lets every user read the private key: defaultMode 0440 (288) or 0400 (256)")
        psc = spec.get("securityContext", {})
        c.expect(psc.get("fsGroup") is not None or all(m & 0o004 for m in modes),
                 f"{what}: the Secret volume {mount['name']}'s files belong to root: uid "
                 f"{psc.get('runAsUser')} can read them only through fsGroup")


def check_tls_group(c, coordinator, workers):
    """Both sides of each link agree on TLS: the workers' Worker port (--tls_client_ca_file) with
    the coordinator's dialling (--worker_tls_ca_file), the coordinator's TLS Rendezvous
    (--tls_cert_file) with the workers' --tls_ca_file, and a coordinator asking for client
    certificates (--tls_client_ca_file) with workers presenting one."""
    cctr = container(coordinator["spec"]["template"], "coordinator")
    wctr = container(workers["spec"]["template"], "worker")
    if cctr is None or wctr is None:
        return
    cargv, wargv = argv_of(cctr), argv_of(wctr)
    if flag_set(wargv, "tls_client_ca_file"):
        c.expect(flag_set(cargv, "worker_tls_ca_file"),
                 "the workers take only TLS callers with a certificate (--tls_client_ca_file): the "
                 "coordinator needs --worker_tls_ca_file (and --tls_cert_file) to reach them")
    if flag_set(cargv, "worker_tls_ca_file"):
        c.expect(flag_set(wargv, "tls_client_ca_file"),
                 "the coordinator dials the workers over TLS (--worker_tls_ca_file): the workers "
                 "need --tls_client_ca_file (with --tls_cert_file, --tls_key_file) to serve it")
    c.expect(flag_set(cargv, "tls_cert_file") == flag_set(wargv, "tls_ca_file"),
             "the workers need --tls_ca_file exactly when the coordinator serves TLS "
             "(--tls_cert_file): they dial its Rendezvous")
    if flag_set(cargv, "tls_client_ca_file"):
        c.expect(flag_set(wargv, "tls_cert_file") and flag_set(wargv, "tls_key_file"),
                 "the coordinator asks for client certificates (--tls_client_ca_file): the workers "
                 "need --tls_cert_file and --tls_key_file to present at its Rendezvous")


def check_rendezvous(c, objects, coordinator, workers, coord_svc):
    """Workers dial the Rendezvous while the group forms, before the coordinator is ready: the
    name they dial must be a headless Service that publishes not-ready pods."""
    cctr = container(coordinator["spec"]["template"], "coordinator")
    wctr = container(workers["spec"]["template"], "worker")
    if cctr is None or wctr is None:
        return
    dial = flag_value(wctr.get("command", []) + wctr.get("args", []), "coordinator")
    advertise = flag_value(cctr.get("command", []) + cctr.get("args", []), "advertise")
    if dial is None:  # check_workers says so
        return
    c.expect(advertise in (None, dial),
             f"the coordinator advertises {advertise} but the workers dial {dial}")
    host, _, port = dial.rpartition(":")
    named = [s for s in coord_svc if s["metadata"]["name"] == host.split(".")[0]]
    if not c.expect(len(named) == 1,
                    f"the workers' --coordinator={dial} names no Service of the coordinator"):
        return
    spec = named[0]["spec"]
    c.expect(spec.get("clusterIP") == "None" and spec.get("publishNotReadyAddresses") is True,
             f"Service/{host}: the Rendezvous is needed before the coordinator is ready, so its "
             "Service must be headless with publishNotReadyAddresses: true")
    c.expect(port.isdigit() and int(port) in [p["port"] for p in spec.get("ports", [])],
             f"Service/{host} lacks port {port}")
    # With --rendezvous_listen the Rendezvous has its own port: the Service's must lead there,
    # and a NetworkPolicy on the coordinator lets only the workers reach it.
    listen = flag_value(cctr.get("command", []) + cctr.get("args", []), "rendezvous_listen")
    if listen is None:
        return
    own = int(listen.rpartition(":")[2])
    named_ports = {p.get("name"): p["containerPort"] for p in cctr.get("ports", [])}
    c.expect(own in named_ports.values(), f"--rendezvous_listen port {own} is not a containerPort")
    for p in spec.get("ports", []):
        if port.isdigit() and p["port"] == int(port):
            target = p.get("targetPort", p["port"])
            c.expect(named_ports.get(target, target) == own,
                     f"Service/{host} port {port} leads to {target}, not the Rendezvous' {own}")
    check_coordinator_policy(c, objects, coordinator, workers, own)


def selects(policy, labels):
    """Whether a NetworkPolicy's podSelector may select pods with `labels`: matchLabels that
    match, or a selector this check cannot read (matchExpressions, empty: every pod)."""
    selector = policy["spec"].get("podSelector", {})
    if selector.get("matchExpressions") or not selector.get("matchLabels"):
        return True
    return labels_match(selector["matchLabels"], labels)


def rule_covers(rule, port, port_names):
    """Whether an ingress rule opens `port`: no ports (all), the number, its containerPort
    name, or a range (endPort) around it."""
    entries = rule.get("ports")
    if not entries:
        return True
    for p in entries:
        number = port_names.get(p.get("port"), p.get("port"))
        if number is None:
            return True  # a protocol alone: every port
        if number == port or (isinstance(number, int) and number <= port <= p.get("endPort", -1)):
            return True
    return False


def check_coordinator_policy(c, objects, coordinator, workers, rendezvous_port):
    """Every NetworkPolicy that may select the coordinator limits Ingress, and each rule that
    opens the Rendezvous port admits the workers' pods only (policies add up: one open rule
    anywhere opens it)."""
    labels = coordinator["spec"]["template"]["metadata"].get("labels", {})
    worker_labels = workers["spec"]["template"]["metadata"].get("labels", {})
    ctr = container(coordinator["spec"]["template"], "coordinator") or {}
    port_names = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
    policies = [p for p in by_kind(objects, "NetworkPolicy") if selects(p, labels)]
    if not c.expect(policies, "no NetworkPolicy selects the coordinator (its Rendezvous port "
                              "must be kept to the workers)"):
        return
    for policy in policies:
        name = policy["metadata"]["name"]
        c.expect("Ingress" in policy["spec"].get("policyTypes", ["Ingress"]),
                 f"NetworkPolicy/{name} selects the coordinator but does not limit Ingress")
        for rule in policy["spec"].get("ingress", []):
            if not rule_covers(rule, rendezvous_port, port_names):
                continue
            sources = rule.get("from", [])
            c.expect(sources and all(set(f) == {"podSelector"} and
                                     labels_match(f["podSelector"].get("matchLabels"),
                                                  worker_labels)
                                     for f in sources),
                     f"NetworkPolicy/{name} lets more than the workers reach the coordinator's "
                     f"Rendezvous port {rendezvous_port}")


def seconds(duration):
    """An absl duration flag value ("60s", "1m30s", "500ms") in seconds, None if unparsed."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        return None
    return sum(float(n) * units[u] for n, u in parts)


def check_grace(c, owner, ctr):
    """SIGTERM drains for up to --drain_timeout (default 20 s); the kubelet must not kill the
    process before: the grace period leaves 10 s more."""
    what = f"{owner['kind']}/{owner['metadata']['name']}"
    drain = flag_value(ctr.get("command", []) + ctr.get("args", []), "drain_timeout")
    drain_s = 20.0 if drain is None else seconds(drain)
    if not c.expect(drain_s is not None, f"{what}: --drain_timeout={drain} does not parse"):
        return
    grace = owner["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    c.expect(grace >= drain_s + 10,
             f"{what}: terminationGracePeriodSeconds {grace} must be >= --drain_timeout "
             f"({drain_s:g} s) + 10")


def check_coordinator(c, coordinator):
    ctr = container(coordinator["spec"]["template"], "coordinator")
    if not c.expect(ctr is not None, "coordinator container missing"):
        return
    ports = [p["containerPort"] for p in ctr.get("ports", [])]
    c.expect(COORDINATOR_PORT in ports, f"coordinator containerPorts {ports} lack 50051")
    argv = argv_of(ctr)
    if flag_set(argv, "tls_cert_file"):
        check_coordinator_tls_probes(c, ctr, argv)
    else:
        for probe, services in (("livenessProbe", ("liveness",)),
                                ("readinessProbe", ("", "llmint8.v1.Generation"))):
            grpc = ctr.get(probe, {}).get("grpc", {})
            c.expect(grpc.get("port") == COORDINATOR_PORT and grpc.get("service", "") in services,
                     f"coordinator {probe} must be grpc on port 50051 asking for "
                     f"{' or '.join(repr(s) for s in services)} (common/health.h)")
    for flag in ("tls_client_ca_file", "worker_tls_ca_file"):
        c.expect(not flag_set(argv, flag) or
                 (flag_set(argv, "tls_cert_file") and flag_set(argv, "tls_key_file")),
                 f"coordinator --{flag} needs --tls_cert_file and --tls_key_file (it serves TLS "
                 "with them, and presents them to the workers)")
    c.expect(flag_set(argv, "tls_cert_file") == flag_set(argv, "tls_key_file"),
             "coordinator --tls_cert_file and --tls_key_file go together")
    check_tls_files(c, coordinator, ctr)
    check_grace(c, coordinator, ctr)
    c.expect(coordinator["spec"].get("replicas") == 1, "exactly one coordinator replica")
    # --metrics_listen=host:P: P is a containerPort, and the scrape annotation (if any) names it.
    for arg in ctr.get("args", []):
        m = re.fullmatch(r"--metrics_listen=.*:(\d+)", arg)
        if m:
            port = int(m.group(1))
            c.expect(port in ports, f"--metrics_listen port {port} is not a containerPort {ports}")
            annotated = coordinator["spec"]["template"]["metadata"].get(
                "annotations", {}).get("prometheus.io/port")
            c.expect(annotated in (None, str(port)),
                     f"prometheus.io/port {annotated} is not the --metrics_listen port {port}")


def check_worker_probes(c, ctr, argv):
    """The workers' grpc probes ask the --listen port, or the --health_listen port when there is
    one; a worker under mutual TLS (--tls_client_ca_file) must have one (its Worker port takes
    only callers with a certificate, which the kubelet's probes are not)."""
    tls = flag_set(argv, "tls_client_ca_file")
    if tls:
        c.expect(all(flag_set(argv, f) for f in ("tls_cert_file", "tls_key_file", "tls_ca_file")),
                 "workers with --tls_client_ca_file serve TLS and dial the coordinator's TLS "
                 "Rendezvous: they need --tls_cert_file, --tls_key_file and --tls_ca_file")
        c.expect(flag_set(argv, "health_listen"),
                 "workers with --tls_client_ca_file need --health_listen (plaintext "
                 "grpc.health.v1): the kubelet's grpc probes speak no TLS")
    health = listen_port(argv, "health_listen")
    where, port = ("--health_listen", health) if health is not None else \
        ("--listen", listen_port(argv, "listen"))
    if health is not None:
        c.expect(health in [p["containerPort"] for p in ctr.get("ports", [])],
                 f"worker --health_listen port {health} is not a containerPort")
        c.expect(listens_on_pod_ip(argv, "health_listen"),
                 "worker --health_listen must listen on the pod's IP (0.0.0.0): the kubelet's "
                 "probes dial it there")
    for probe, services in (("livenessProbe", ("liveness",)), ("readinessProbe", ("",))):
        kind, spec = probe_handler(ctr.get(probe))
        c.expect(kind == "grpc" and container_port(ctr, spec.get("port")) == port and
                 spec.get("service", "") in services,
                 f"worker {probe} must be grpc on the {where} port {port} asking for "
                 f"{' or '.join(repr(s) for s in services)} (common/health.h)")


def check_workers(c, objects, workers, cfg):
    template = workers["spec"]["template"]
    labels = template["metadata"].get("labels", {})
    ctr = container(template, "worker")
    if not c.expect(ctr is not None, "worker container missing"):
        return
    argv = ctr.get("command", []) + ctr.get("args", [])
    c.expect(flag_value(argv, "coordinator") is not None, "worker command lacks --coordinator=")
    liveness = ctr.get("livenessProbe", {}).get("grpc", {})
    c.expect(liveness.get("service") == "liveness",
             "worker livenessProbe must be grpc asking for 'liveness' (common/health.h)")
    check_worker_probes(c, ctr, argv)
    check_tls_files(c, workers, ctr)
    check_grace(c, workers, ctr)
    if cfg.get("LLMINT8_BACKEND", "gloo") == "gloo":
        # Gloo's transport is reached at the address the worker advertises: its pod's.
        pod_ip = [e["name"] for e in ctr.get("env", [])
                  if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"]
        c.expect(any(a == f"--gloo_hostname=$({n})" for n in pod_ip for a in argv) or
                 any(a.startswith("--gloo_interface=") for a in argv),
                 "Gloo workers must advertise their pod IP (--gloo_hostname=$(POD_IP) from "
                 "status.podIP) or name --gloo_interface")
    c.expect(workers["spec"].get("podManagementPolicy") == "Parallel",
             "workers must start in parallel (a group needs every rank)")
    # Config: TP == replicas == addresses, in rank order.
    replicas = workers["spec"].get("replicas", 1)
    try:
        tp = int(cfg.get("LLMINT8_TP", "-1"))
    except ValueError:
        tp = -1
    c.expect(tp == replicas, f"LLMINT8_TP={cfg.get('LLMINT8_TP')} but {replicas} worker replicas")
    addresses = [a for a in cfg.get("LLMINT8_WORKERS", "").split(",") if a]
    sts, svc = workers["metadata"]["name"], workers["spec"].get("serviceName")
    want = [f"{sts}-{i}.{svc}:" for i in range(replicas)]
    c.expect(len(addresses) == replicas and all(a.startswith(w) for a, w in zip(addresses, want)),
             f"LLMINT8_WORKERS={addresses} must be {sts}-0..{replicas - 1}.{svc}:PORT in rank order")
    c.expect(cfg.get("LLMINT8_DTYPE") in ("fp16", "int8"),
             f"LLMINT8_DTYPE={cfg.get('LLMINT8_DTYPE')} must be fp16 or int8")
    # Disruption budget and network policy select exactly the workers.
    pdbs = [p for p in by_kind(objects, "PodDisruptionBudget")
            if labels_match(p["spec"]["selector"].get("matchLabels"), labels)]
    c.expect(len(pdbs) == 1, "no PodDisruptionBudget selects the workers")
    policies = [p for p in by_kind(objects, "NetworkPolicy")
                if labels_match(p["spec"]["podSelector"].get("matchLabels"), labels)]
    if c.expect(len(policies) == 1, "no NetworkPolicy selects the workers"):
        pol = policies[0]["spec"]
        c.expect("Ingress" in pol.get("policyTypes", []), "worker NetworkPolicy must limit Ingress")
        sources = [frm.get("podSelector", {}).get("matchLabels", {})
                   for rule in pol.get("ingress", []) for frm in rule.get("from", [])]
        components = sorted(s.get("app.kubernetes.io/component", "?") for s in sources)
        c.expect(components == ["coordinator", "worker"],
                 f"workers must be reachable only from the coordinator and peer workers, got {components}")
        listen = flag_value(argv, "listen") or ""
        worker_port = listen.rsplit(":", 1)[-1]
        for rule in pol.get("ingress", []):
            c.expect(bool(rule.get("from")), "every worker ingress rule must name its sources "
                     "(a rule without `from` admits every pod and address)")
            ports = rule.get("ports", [])
            for frm in rule.get("from", []):
                c.expect(set(frm) == {"podSelector"},
                         "worker ingress sources must be pod selectors (no ipBlock/namespaceSelector)")
                component = frm.get("podSelector", {}).get("matchLabels", {}).get(
                    "app.kubernetes.io/component")
                if component == "worker":
                    c.expect(all("port" not in p for p in ports),
                             "peer workers must reach every TCP port of a worker: Gloo and NCCL "
                             "listen on ephemeral ports")
                elif component == "coordinator":
                    c.expect(not ports or any("port" not in p or str(p["port"]) == worker_port
                                              for p in ports),
                             f"the coordinator must reach the workers' --listen port "
                             f"{worker_port or '?'}")
    # GPUs.
    if cfg.get("LLMINT8_DEVICE") == "cuda":
        res = ctr.get("resources", {})
        gpus = res.get("limits", {}).get("nvidia.com/gpu")
        c.expect(gpus is not None and int(gpus) >= 1, "GPU workers must limit nvidia.com/gpu")
        c.expect(res.get("requests", {}).get("nvidia.com/gpu") == gpus,
                 "nvidia.com/gpu requests must equal limits")
        c.expect(flag_value(argv, "cuda_device") == "0",
                 "GPU workers need --cuda_device=0: a pod sees its GPU as device 0, and without "
                 "the flag a worker takes the device numbered as its rank")


def container_env(objects, ctr):
    """The variables $(NAME) expands to in a container: its ConfigMaps', then its env's (a
    pod IP stands in for status.podIP)."""
    env = {}
    for src in ctr.get("envFrom", []):
        name = src.get("configMapRef", {}).get("name")
        for cm in by_kind(objects, "ConfigMap"):
            if cm["metadata"]["name"] == name:
                env.update(cm.get("data", {}))
    for e in ctr.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[e["name"]] = "10.0.0.17"
    return env


def check_flags(c, objects, owner, name, binary):
    """The container's command line, as the kubelet expands it, passes `llmint8 --check_flags`."""
    ctr = container(owner["spec"]["template"], name)
    if ctr is None:
        return
    argv = ctr.get("command", []) + ctr.get("args", [])
    # The image's ENTRYPOINT is the binary: args alone, or a command naming it.
    if argv and argv[0].endswith("/llmint8"):
        argv = argv[1:]
    env = container_env(objects, ctr)
    # $(NAME) expands; $$(NAME) is the kubelet's escape for a literal $(NAME).
    argv = [re.sub(r"\$(\$?)\((\w+)\)",
                   lambda m: f"$({m.group(2)})" if m.group(1) else env.get(m.group(2), m.group(0)),
                   a) for a in argv]
    unexpanded = [a for a in argv if re.search(r"(?<!\$)\$\(\w+\)", a)]
    if not c.expect(not unexpanded, f"{name}: {unexpanded} name variables the container lacks"):
        return
    try:
        run = subprocess.run([binary] + argv + ["--check_flags"], capture_output=True, text=True,
                             timeout=60)
        said = (run.stderr.strip() or run.stdout.strip()).splitlines()
        c.expect(run.returncode == 0, f"{name}: `llmint8 {' '.join(argv)}` is refused: "
                                      f"{said[-1] if said else run.returncode}")
    except (OSError, subprocess.TimeoutExpired) as e:
        c.expect(False, f"{name}: could not run {binary}: {e}")


def check_plan(c, objects, cfg):
    plans = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("llmint8-plan")]
    if not plans:
        return
    text = plans[0].get("data", {}).get("plan.json")
    if not c.expect(text is not None, "llmint8-plan ConfigMap lacks plan.json"):
        return
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as e:
        c.expect(False, f"plan.json is not JSON: {e}")
        return
    c.expect(str(plan.get("tp")) == cfg.get("LLMINT8_TP"),
             f"plan.json tp={plan.get('tp')} but LLMINT8_TP={cfg.get('LLMINT8_TP')}")
    c.expect(plan.get("dtype") == cfg.get("LLMINT8_DTYPE"),
             f"plan.json dtype={plan.get('dtype')} but LLMINT8_DTYPE={cfg.get('LLMINT8_DTYPE')}")
    per_gpu = plan.get("per_gpu", {})
    c.expect(per_gpu.get("total", 1 << 62) <= plan.get("gpu_bytes", 0),
             "plan.json per-GPU total exceeds the GPU size")
    model = cfg.get("LLMINT8_MODEL", "")
    c.expect(re.sub(r"^.*/", "", model) == plan.get("model"),
             f"plan.json model {plan.get('model')} is not LLMINT8_MODEL={model}")


def check_all(objects, name, binary=None):
    c = Checker(name)
    check_namespaces(c, objects)
    check_security(c, objects)
    check_references(c, objects)
    cfg = config_data(c, objects, "llmint8-config")
    coordinator = one(c, objects, "Deployment", "coordinator")
    workers = one(c, objects, "StatefulSet", "worker")
    check_services(c, objects, coordinator, workers)
    if coordinator:
        check_coordinator(c, coordinator)
    if workers:
        check_workers(c, objects, workers, cfg)
    check_plan(c, objects, cfg)
    if binary:
        if coordinator:
            check_flags(c, objects, coordinator, "coordinator", binary)
        if workers:
            check_flags(c, objects, workers, "worker", binary)
    return c


def worker_policy(objects):
    return next(o["spec"] for o in by_kind(objects, "NetworkPolicy")
                if o["spec"]["podSelector"].get("matchLabels", {}).get(
                    "app.kubernetes.io/component") == "worker")


def pod_container(objects, kind, name):
    owner = next(o for o in objects if o["kind"] == kind)
    return owner["spec"]["template"]["spec"], container(owner["spec"]["template"], name)


def coordinator_of(objects):
    return pod_container(objects, "Deployment", "coordinator")[1]


def worker_of(objects):
    return pod_container(objects, "StatefulSet", "worker")[1]


def drop_flags(ctr, *flags):
    names = {f for flag in flags for f in (flag, flag.replace("_", "-"))}
    ctr["args"] = [a for a in ctr["args"] if a.lstrip("-").partition("=")[0] not in names]


def set_flags(ctr, **values):
    drop_flags(ctr, *values)
    ctr["args"] += [f"--{k}={v}" for k, v in values.items()]


def tls_volume(objects, kind):
    spec, ctr = pod_container(objects, kind, "worker" if kind == "StatefulSet" else "coordinator")
    path = flag_value(argv_of(ctr), "tls_key_file") or ""
    mount = next(m for m in ctr["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    return spec, mount, next(v for v in spec["volumes"] if v["name"] == mount["name"])


# A mutation returns this when the overlay lacks what it breaks (the TLS ones on a plaintext
# overlay): --self_test skips it there.
NOT_APPLICABLE = object()


def under_tls(mutate):
    """A mutation of a group under mutual TLS (workers with --tls_client_ca_file)."""
    def apply(objects):
        if not flag_set(argv_of(worker_of(objects)), "tls_client_ca_file"):
            return NOT_APPLICABLE
        mutate(objects)
    return apply


def plaintext_probes_over_tls(objects):
    """The TLS overlay's probes without its flags: the coordinator's httpGet / tcpSocket, the
    workers' on a health port nobody serves."""
    cctr, wctr = coordinator_of(objects), worker_of(objects)
    drop_flags(cctr, *TLS_FILE_FLAGS)
    drop_flags(wctr, *TLS_FILE_FLAGS, "health_listen")
    cctr["readinessProbe"] = {"httpGet": {"port": "metrics", "path": "/health"}}
    cctr["livenessProbe"] = {"tcpSocket": {"port": COORDINATOR_PORT}}
    wctr["livenessProbe"] = {"grpc": {"port": 50054, "service": "liveness"}}
    wctr["readinessProbe"] = {"grpc": {"port": 50054}}


def workers_tls_only(objects):
    """Workers under mutual TLS that a plaintext coordinator cannot reach."""
    d = "/etc/llmint8/tls"
    set_flags(worker_of(objects), tls_cert_file=f"{d}/tls.crt", tls_key_file=f"{d}/tls.key",
              tls_client_ca_file=f"{d}/ca.crt", health_listen="0.0.0.0:50054")
    drop_flags(coordinator_of(objects), "worker_tls_ca_file")


# Breakages the checks must catch, each as (what it does to the rendered objects, a phrase of
# the failure it must cause): --self_test applies each to a copy and expects that failure.
MUTATIONS = [
    (lambda objs: worker_policy(objs)["ingress"].append({"ports": [{"port": 50052}]}),
     "must name its sources"),
    (lambda objs: [r.update(ports=[{"port": 50052, "protocol": "TCP"}])
                   for r in worker_policy(objs)["ingress"]],
     "every TCP port of a worker"),
    (lambda objs: worker_policy(objs)["ingress"][0].update(ports=[{"port": 1}]),
     "--listen port"),
    (lambda objs: worker_policy(objs).update(policyTypes=[]), "must limit Ingress"),
    # TLS: probes that only a TLS coordinator / a worker with --health_listen may have.
    (plaintext_probes_over_tls, "coordinator readinessProbe must be grpc on port 50051"),
    (plaintext_probes_over_tls, "worker readinessProbe must be grpc on the --listen port"),
    (workers_tls_only, "the coordinator needs --worker_tls_ca_file"),
    (under_tls(lambda objs: drop_flags(worker_of(objs), "health_listen")),
     "need --health_listen"),
    (under_tls(lambda objs: set_flags(worker_of(objs), health_listen="127.0.0.1:50054")),
     "--health_listen must listen on the pod's IP"),
    (under_tls(lambda objs: set_flags(coordinator_of(objs), metrics_listen="127.0.0.1:9090")),
     "--metrics_listen must listen on the pod's IP"),
    (under_tls(lambda objs: worker_of(objs).update(
        livenessProbe={"grpc": {"port": 50052, "service": "liveness"}})),
     "worker livenessProbe must be grpc on the --health_listen port"),
    (under_tls(lambda objs: worker_of(objs).update(
        ports=[p for p in worker_of(objs)["ports"] if p["containerPort"] != 50054])),
     "--health_listen port 50054 is not a containerPort"),
    (under_tls(lambda objs: drop_flags(worker_of(objs), "tls_ca_file")),
     "need --tls_ca_file exactly when"),
    (under_tls(lambda objs: drop_flags(coordinator_of(objs), "tls_cert_file")),
     "coordinator --worker_tls_ca_file needs --tls_cert_file"),
    (under_tls(lambda objs: coordinator_of(objs).update(
        readinessProbe={"grpc": {"port": 50051, "service": "llmint8.v1.Generation"}})),
     "readinessProbe must be httpGet on the --metrics_listen port"),
    (under_tls(lambda objs: coordinator_of(objs).update(
        livenessProbe={"httpGet": {"port": "metrics", "path": "/health"}})),
     "livenessProbe must be tcpSocket on port 50051"),
    (under_tls(lambda objs: drop_flags(coordinator_of(objs), "metrics_listen")),
     "needs --metrics_listen"),
    (under_tls(lambda objs: tls_volume(objs, "Deployment")[1].update(mountPath="/etc/tls")),
     "lies on no volumeMount"),
    (under_tls(lambda objs: tls_volume(objs, "StatefulSet")[1].update(readOnly=False)),
     "must be mounted readOnly"),
    (under_tls(lambda objs: set_flags(worker_of(objs), tls_key_file=flag_value(
        argv_of(worker_of(objs)), "tls_cert_file"))),
     "expects Secret key tls.key"),
    (under_tls(lambda objs: tls_volume(objs, "StatefulSet")[2]["secret"].update(defaultMode=0o644)),
     "lets every user read the private key"),
    (under_tls(lambda objs: tls_volume(objs, "Deployment")[0]["securityContext"].pop("fsGroup")),
     "only through fsGroup"),
]


def self_test(objects, name):
    """Whether every mutation of MUTATIONS fails the checks as it should."""
    ok = True
    applied = 0
    for i, (mutate, phrase) in enumerate(MUTATIONS):
        broken = copy.deepcopy(objects)
        if mutate(broken) is NOT_APPLICABLE:
            continue
        applied += 1
        failures = check_all(broken, name).failures
        if not any(phrase in f for f in failures):
            print(f"  FAIL {name}: self-test mutation {i} was not caught as '{phrase}' "
                  f"(failures: {failures})")
            ok = False
    print(f"  {name}: self-test: {applied} broken variants, "
          f"{'all caught' if ok else 'NOT all caught'}"
          f"{f' ({len(MUTATIONS) - applied} not applicable)' if applied < len(MUTATIONS) else ''}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("--name", default=None)
    parser.add_argument("--binary", default=None,
                        help="an llmint8 binary to check the command lines with")
    parser.add_argument("--self_test", action="store_true",
                        help="also check that broken variants of the objects fail the checks")
    args = parser.parse_args()
    with open(args.rendered) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    c = check_all(objects, args.name or args.rendered, args.binary)
    if args.self_test and not self_test(objects, c.name):
        return 1
    for failure in c.failures:
        print(f"  FAIL {c.name}: {failure}")
    print(f"  {c.name}: {len(objects)} objects, {c.checks - len(c.failures)}/{c.checks} "
          f"consistency checks passed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
