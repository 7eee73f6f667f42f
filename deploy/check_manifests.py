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
    (up while the group serves); the workers' liveness asks "liveness" too;
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
With --self_test it also breaks copies of the objects in known ways (MUTATIONS) and checks
that each is caught. Prints one line per failed check; exits 1 if any failed.
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
    for probe, services in (("livenessProbe", ("liveness",)),
                            ("readinessProbe", ("", "llmint8.v1.Generation"))):
        grpc = ctr.get(probe, {}).get("grpc", {})
        c.expect(grpc.get("port") == COORDINATOR_PORT and grpc.get("service", "") in services,
                 f"coordinator {probe} must be grpc on port 50051 asking for "
                 f"{' or '.join(repr(s) for s in services)} (common/health.h)")
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
]


def self_test(objects, name):
    """Whether every mutation of MUTATIONS fails the checks as it should."""
    ok = True
    for i, (mutate, phrase) in enumerate(MUTATIONS):
        broken = copy.deepcopy(objects)
        mutate(broken)
        failures = check_all(broken, name).failures
        if not any(phrase in f for f in failures):
            print(f"  FAIL {name}: self-test mutation {i} was not caught as '{phrase}' "
                  f"(failures: {failures})")
            ok = False
    print(f"  {name}: self-test: {len(MUTATIONS)} broken variants, "
          f"{'all caught' if ok else 'NOT all caught'}")
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
