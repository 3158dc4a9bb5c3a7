#!/usr/bin/env python3
"""Policy checks over the YAML that a kustomize overlay renders (deploy/k8s/overlays/*).

    deploy_policy.py split RENDERED OUT_DIR    # core kinds to OUT_DIR/core.yaml, each custom
                                               # resource to OUT_DIR/cr/<group>/<kind>_<version>/
    deploy_policy.py check RENDERED NAME       # the policy below; exit 1 on any failure
    deploy_policy.py self-test RENDERED NAME   # each known breakage of RENDERED must fail

deploy/local/check-deploy.sh runs all three for each overlay. The policy is the Kubernetes
list of docs/kubernetes.md: hardened pods (as the Dockerfile's user) with requests and limits, probes on the operations
listener, the worker id from the pod name, a termination grace above the worker's shutdown
grace, no `replicas` on the KEDA-scaled worker Deployment, a KEDA trigger that reads the
queue's pending set under the key the code uses and targets the worker concurrency, a maxReplicaCount within the catalog database's connection
budget, network policies that let each component reach only what it needs, key custody,
disruption budgets, topology spread, and monitors that point at the operations port.
"""

import copy
import ipaddress
import pathlib
import re
import sys

import yaml

# Kinds validated against the strict schemas in deploy/schemas/crds instead of Kubernetes'.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

OPS_PORT = 9091
# Worker's kubelet margin over METASYNC_SHUTDOWN_GRACE: releasing what is left, exiting.
GRACE_MARGIN_SECONDS = 10
# Settings' defaults where a manifest leaves them out (README, Configuration).
DEFAULTS = {
    "METASYNC_DB_MAX_CONNECTIONS": "16",
    "METASYNC_WORKER_CONCURRENCY": "8",
    "METASYNC_SHUTDOWN_GRACE": "25s",
    "METASYNC_QUEUE": "metasync-sync",
    "METASYNC_OUTBOUND_ALLOW": "",
}
# Custody (docs/security.md): what each component's environment may never hold.
FORBIDDEN_ENV = {
    "api": {"METASYNC_OPENING_KEYS", "METASYNC_SECRET_KEY"},
    "worker": {
        "METASYNC_SEALING_KEY",
        "METASYNC_PASSWORD_FINGERPRINT_KEY",
        "METASYNC_JWT_SECRET",
        "METASYNC_JWT_PUBLIC_KEYS",
        "METASYNC_INTERNAL_API_KEYS",
    },
    "migrate": {
        "METASYNC_OPENING_KEYS",
        "METASYNC_SECRET_KEY",
        "METASYNC_SEALING_KEY",
        "METASYNC_PASSWORD_FINGERPRINT_KEY",
        "METASYNC_JWT_SECRET",
        "METASYNC_INTERNAL_API_KEYS",
    },
}
# Ports each component may reach besides the worker's sources: DNS, PostgreSQL, Redis.
ALLOWED_EGRESS_PORTS = {"api": {53, 5432, 6379}, "worker": {53, 5432, 6379}, "migrate": {53, 5432}}
DOC_NET = ipaddress.ip_network("192.0.2.0/24")  # the base's placeholders (TEST-NET-1)
ROOT = pathlib.Path(__file__).resolve().parents[2]


def pending_key(queue):
    """The pending set's key as shared/src/queue/mod.rs spells it (`Keys::new`), so that a
    renamed key fails here rather than silently starving the autoscaler."""
    source = (ROOT / "shared/src/queue/mod.rs").read_text()
    base = re.search(r'let base = format!\("([^"]+)"\);', source)
    pending = re.search(r'pending: format!\("\{base\}([^"]+)"\)', source)
    if not (base and pending):
        return None
    # Rust's format strings escape braces as Python's do, and name the argument alike.
    return ("{base}" + pending.group(1)).format(base=base.group(1).format(queue=queue))


def image_user():
    """The uid of the Dockerfile's last USER."""
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    return int(users[-1]) if users else None


def load(path):
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d]


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * units[m.group(2)]


class Rendered:
    """The documents of one overlay, with look-ups the checks share."""

    def __init__(self, docs):
        self.docs = docs

    def all(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind, name_prefix):
        for d in self.all(kind):
            if d["metadata"]["name"].startswith(name_prefix):
                return d
        return None

    def workload(self, component):
        kind = "Job" if component == "migrate" else "Deployment"
        return self.one(kind, f"metasync-{component}")

    def env(self, component):
        """The container's environment as the process sees it: ConfigMaps, then `env`."""
        container = pod_spec(self.workload(component))["containers"][0]
        values = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                cm = self.one("ConfigMap", ref["name"])
                values.update((cm or {}).get("data", {}))
            elif source.get("secretRef"):
                values["<secretRef>"] = source["secretRef"]["name"]
        for var in container.get("env", []):
            values[var["name"]] = var.get("value", var.get("valueFrom"))
        return values

    def setting(self, component, name):
        value = self.env(component).get(name, DEFAULTS.get(name))
        return value if isinstance(value, str) else None


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def ports_of(rule):
    return {p.get("port") for p in rule.get("ports", [])}


def checks(r, name):
    """Yields (description, ok, detail) for every policy point."""
    components = ["api", "worker", "migrate"]
    for c in components:
        w = r.workload(c)
        yield f"{c}: workload present", w is not None, ""
        if w is None:
            return

    # Hardened pods with requests and limits.
    for c in components:
        spec = pod_spec(r.workload(c))
        psc = spec.get("securityContext", {})
        yield f"{c}: pod runs as non-root", psc.get("runAsNonRoot") is True, psc
        yield (f"{c}: pod uid is not 0 and is the image's USER",
               psc.get("runAsUser", 0) != 0 and psc.get("runAsUser") == image_user(), (psc, image_user()))
        yield (f"{c}: pod seccomp RuntimeDefault",
               psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", psc)
        yield f"{c}: no service account token", spec.get("automountServiceAccountToken") is False, ""
        yield (f"{c}: no host namespaces",
               not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), "")
        for ctr in spec.get("containers", []) + spec.get("initContainers", []):
            sc = ctr.get("securityContext", {})
            n = f"{c}/{ctr['name']}"
            yield f"{n}: allowPrivilegeEscalation false", sc.get("allowPrivilegeEscalation") is False, sc
            yield f"{n}: readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True, sc
            yield f"{n}: not privileged", not sc.get("privileged", False), sc
            caps = sc.get("capabilities", {})
            yield f"{n}: capabilities drop ALL, add none", caps.get("drop") == ["ALL"] and not caps.get("add"), caps
            yield (f"{n}: runs as non-root",
                   sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True and sc.get("runAsUser", 1) != 0, sc)
            yield (f"{n}: seccomp RuntimeDefault",
                   sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") == "RuntimeDefault", sc)
            res = ctr.get("resources", {})
            for kind in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    yield f"{n}: {kind}.{what} set", what in res.get(kind, {}), res
            image = ctr.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            yield f"{n}: image has a tag that is not latest", tag not in ("", "latest"), image
            if name == "prod":
                yield f"{n}: prod image is not a dev build", tag != "dev" and "/" in image, image

    # Probes on the operations listener, bound on every interface in the pod.
    for c in ("api", "worker"):
        ctr = pod_spec(r.workload(c))["containers"][0]
        ops = [p for p in ctr.get("ports", []) if p.get("name") == "ops"]
        yield f"{c}: container port ops is {OPS_PORT}", [p["containerPort"] for p in ops] == [OPS_PORT], ops
        addr = r.setting(c, "METASYNC_METRICS_ADDR") or ""
        yield f"{c}: METASYNC_METRICS_ADDR=0.0.0.0:{OPS_PORT}", addr == f"0.0.0.0:{OPS_PORT}", addr
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = ctr.get(probe, {}).get("httpGet", {})
            yield (f"{c}: {probe} GET {path} on the ops port",
                   get.get("path") == path and get.get("port") in ("ops", OPS_PORT), get)

    # Workers: KEDA owns replicas, the id is the pod name, the kubelet waits out the grace.
    worker = r.workload("worker")
    yield "worker: Deployment sets no replicas (KEDA owns them)", "replicas" not in worker["spec"], ""
    name_var = next((v for v in pod_spec(worker)["containers"][0].get("env", [])
                     if v["name"] == "METASYNC_WORKER_NAME"), {})
    yield ("worker: METASYNC_WORKER_NAME from the pod name (downward API)",
           name_var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", name_var)
    grace = duration_seconds(r.setting("worker", "METASYNC_SHUTDOWN_GRACE"))
    tgp = pod_spec(worker).get("terminationGracePeriodSeconds", 30)
    yield (f"worker: terminationGracePeriodSeconds {tgp} >= shutdown grace {grace:g} + {GRACE_MARGIN_SECONDS}",
           tgp >= grace + GRACE_MARGIN_SECONDS, "")
    api = r.workload("api")
    max_wait = duration_seconds(r.setting("api", "METASYNC_MAX_WAIT") or "60s")
    yield (f"api: terminationGracePeriodSeconds > longest long-poll ({max_wait:g} s)",
           pod_spec(api).get("terminationGracePeriodSeconds", 30) > max_wait, "")
    job = r.workload("migrate")
    ctr = pod_spec(job)["containers"][0]
    yield ("migrate: runs metasync-api migrate",
           ctr.get("command", [""])[-1].endswith("metasync-api") and ctr.get("args") == ["migrate"], ctr.get("args"))

    # Custody of keys.
    for c in components:
        env = r.env(c)
        held = FORBIDDEN_ENV[c] & set(env)
        yield f"{c}: holds none of {sorted(FORBIDDEN_ENV[c])}", not held and "<secretRef>" not in env, held
    for c, needed in (("api", "METASYNC_SEALING_KEY"), ("api", "METASYNC_PASSWORD_FINGERPRINT_KEY"),
                      ("worker", "METASYNC_OPENING_KEYS")):
        yield f"{c}: {needed} from a Secret", "secretKeyRef" in (r.env(c).get(needed) or {}), ""

    # Disruption budgets and topology spread.
    for c in ("api", "worker"):
        labels = r.workload(c)["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in r.all("PodDisruptionBudget") if selects(p["spec"].get("selector"), labels)]
        yield f"{c}: one PodDisruptionBudget selects its pods", len(pdbs) == 1, len(pdbs)
        if pdbs:
            spec = pdbs[0]["spec"]
            yield (f"{c}: the budget lets a drain proceed (maxUnavailable >= 1)",
                   "maxUnavailable" in spec and str(spec["maxUnavailable"]) not in ("0", "0%"), spec)
        tsc = pod_spec(r.workload(c)).get("topologySpreadConstraints", [])
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
            yield (f"{c}: spread across {key}",
                   any(t["topologyKey"] == key and selects(t.get("labelSelector"), labels) for t in tsc), "")

    # KEDA: the trigger reads this queue's pending set, one pod per concurrency's worth.
    so = r.one("ScaledObject", "metasync-worker")
    yield "keda: ScaledObject present", so is not None, ""
    if so is None:
        return
    spec = so["spec"]
    target = spec.get("scaleTargetRef", {})
    yield ("keda: targets the worker Deployment",
           target.get("name") == worker["metadata"]["name"] and target.get("kind", "Deployment") == "Deployment", target)
    triggers = spec.get("triggers", [])
    redis = [t for t in triggers if t.get("type") == "redis"]
    yield "keda: a redis trigger", len(redis) == 1, [t.get("type") for t in triggers]
    queue = r.setting("worker", "METASYNC_QUEUE")
    concurrency = int(r.setting("worker", "METASYNC_WORKER_CONCURRENCY"))
    if redis:
        meta = redis[0]["metadata"]
        yield (f"keda: listName is the pending set of queue {queue} (as shared/src/queue/mod.rs names it)",
               meta.get("listName") == f"metasync:{{{queue}}}:pending" == pending_key(queue),
               (meta.get("listName"), pending_key(queue)))
        yield (f"keda: listLength equals the worker concurrency ({concurrency})",
               meta.get("listLength") == str(concurrency), meta.get("listLength"))
        yield "keda: Redis address set by the overlay", "invalid" not in meta.get("address", "invalid"), meta
        if queue != r.setting("api", "METASYNC_QUEUE"):
            yield "keda: API and workers share the queue", False, queue
        auth = redis[0].get("authenticationRef", {}).get("name")
        if auth:
            yield (f"keda: TriggerAuthentication {auth} exists",
                   r.one("TriggerAuthentication", auth) is not None, "")
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
    down = behavior.get("scaleDown", {})
    pols = down.get("policies", [])
    yield ("keda: scale-down removes at most one pod per >= 2 minutes",
           bool(pols) and all(p["type"] == "Pods" and p["value"] == 1 and p["periodSeconds"] >= 120 for p in pols),
           pols)
    yield ("keda: scale-down waits out a stabilization window >= 60 s",
           down.get("stabilizationWindowSeconds", 300) >= 60, down)

    # The catalog database's connection budget bounds maxReplicaCount.
    notes = so["metadata"].get("annotations", {})
    try:
        budget = int(notes["metasync.dev/catalog-max-connections"]) - int(
            notes["metasync.dev/catalog-reserved-connections"])
    except (KeyError, ValueError):
        budget = None
    yield "budget: the ScaledObject states the catalog's connections", budget is not None, notes
    if budget is not None:
        def surge(w):
            """Extra pods during a rollout; None for a percentage (not countable here)."""
            value = str(w["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%"))
            return None if value.endswith("%") else int(value)

        api_pool = int(r.setting("api", "METASYNC_DB_MAX_CONNECTIONS"))
        worker_pool = int(r.setting("worker", "METASYNC_DB_MAX_CONNECTIONS"))
        job_pool = int(r.setting("migrate", "METASYNC_DB_MAX_CONNECTIONS"))
        api_surge, worker_surge = surge(api), surge(worker)
        yield "budget: surges are pod counts, not percentages", None not in (api_surge, worker_surge), ""
        if None not in (api_surge, worker_surge):
            api_pods = api["spec"].get("replicas", 1) + api_surge
            max_workers = spec.get("maxReplicaCount", 100) + worker_surge
            used = api_pods * api_pool + job_pool + max_workers * worker_pool
            allowed = (budget - api_pods * api_pool - job_pool) // worker_pool - worker_surge
            yield (f"budget: {api_pods} API x {api_pool} + job {job_pool} + {max_workers} workers x "
                   f"{worker_pool} = {used} <= {budget} (max workers {allowed})", used <= budget, "")
        if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            yield "keda: minReplicaCount <= maxReplicaCount", False, ""

    # Network policies.
    for c in components:
        labels = r.workload(c)["spec"]["template"]["metadata"]["labels"]
        nps = [n for n in r.all("NetworkPolicy") if selects(n["spec"].get("podSelector"), labels)]
        yield f"{c}: one NetworkPolicy selects its pods", len(nps) == 1, len(nps)
        if len(nps) != 1:
            continue
        np = nps[0]["spec"]
        yield f"{c}: NetworkPolicy restricts ingress and egress", set(np.get("policyTypes", [])) == {
            "Ingress", "Egress"}, np.get("policyTypes")
        rules = np.get("egress", [])
        yield f"{c}: every egress rule names its destinations", all(rule.get("to") for rule in rules), ""
        cidrs = [ipaddress.ip_network(peer["ipBlock"]["cidr"]) for rule in rules for peer in rule.get("to", [])
                 if "ipBlock" in peer]
        yield (f"{c}: no egress to everywhere", all(n.prefixlen > 0 for n in cidrs), [str(n) for n in cidrs])
        yield (f"{c}: no placeholder address left (192.0.2.0/24)",
               not any(n.version == 4 and n.subnet_of(DOC_NET) for n in cidrs), [str(n) for n in cidrs])
        dns = [rule for rule in rules if ports_of(rule) == {53}]
        yield (f"{c}: DNS egress to kube-dns only",
               len(dns) == 1 and all("podSelector" in peer for peer in dns[0]["to"]), "")
        wanted = ALLOWED_EGRESS_PORTS[c] - {53}
        for port in sorted(wanted):
            yield f"{c}: egress to port {port}", any(ports_of(rule) == {port} for rule in rules), ""
        portless = [rule for rule in rules if not rule.get("ports")]
        others = [rule for rule in rules if rule.get("ports") and not ports_of(rule) <= ALLOWED_EGRESS_PORTS[c]]
        yield f"{c}: egress ports within {sorted(ALLOWED_EGRESS_PORTS[c])}", not others, others
        if c == "worker":
            sources = [ipaddress.ip_network(peer["ipBlock"]["cidr"]) for rule in portless
                       for peer in rule["to"]]
            yield ("worker: sources reached only by ipBlock",
                   all("ipBlock" in peer for rule in portless for peer in rule["to"]), "")
            allow = [ipaddress.ip_network(s.strip()) for s in (r.setting("worker", "METASYNC_OUTBOUND_ALLOW")
                                                               or "").split(",") if s.strip()]
            yield ("worker: every METASYNC_OUTBOUND_ALLOW range is open to the sources",
                   all(any(a.version == s.version and a.subnet_of(s) for s in sources) for a in allow),
                   ([str(a) for a in allow], [str(s) for s in sources]))
        else:
            yield f"{c}: no egress beyond DNS, PostgreSQL, Redis (no sources)", not portless, portless
        if c == "migrate":
            yield "migrate: no ingress", not np.get("ingress"), np.get("ingress")
        else:
            ops_rules = [rule for rule in np.get("ingress", []) if ports_of(rule) & {"ops", OPS_PORT}]
            yield (f"{c}: ops port admitted only from selected namespaces",
                   bool(ops_rules) and all(rule.get("from") for rule in ops_rules), ops_rules)
            if c == "worker":
                yield "worker: no ingress but the ops port", len(np.get("ingress", [])) == len(ops_rules), ""

    # Monitors point at the operations port.
    svc = r.one("Service", "metasync-api")
    sm = r.one("ServiceMonitor", "metasync-api")
    pm = r.one("PodMonitor", "metasync-worker")
    yield "monitoring: ServiceMonitor and PodMonitor present", sm is not None and pm is not None, ""
    if sm and svc:
        ops = [p for p in svc["spec"]["ports"] if p.get("targetPort") in ("ops", OPS_PORT)]
        yield ("monitoring: ServiceMonitor scrapes the API Service's ops port",
               selects(sm["spec"]["selector"], svc["metadata"]["labels"])
               and [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in ops], "")
    if pm:
        yield ("monitoring: PodMonitor scrapes the workers' ops port",
               selects(pm["spec"]["selector"], worker["spec"]["template"]["metadata"]["labels"])
               and [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["ops"], "")
    yield "monitoring: PrometheusRule present", r.one("PrometheusRule", "metasync") is not None, ""

    # Secrets: placeholders only, and only where the overlay ships an example.
    secrets = r.all("Secret")
    for s in secrets:
        values = {**s.get("stringData", {}), **s.get("data", {})}
        yield (f"secret {s['metadata']['name']}: placeholder values only",
               all("REPLACE-ME" in str(v) for v in values.values()), sorted(values))
    if name == "prod":
        yield "prod: ships no Secret (they come from the secret manager)", not secrets, ""


def run(docs, name, quiet=False):
    passed = failed = 0
    for description, ok, detail in checks(Rendered(docs), name):
        if ok:
            passed += 1
        else:
            failed += 1
        if not ok or not quiet:
            print(f"  {'ok  ' if ok else 'FAIL'} {description}" + ("" if ok else f": {detail}"))
    return passed, failed


def split(rendered, out_dir):
    out = pathlib.Path(out_dir)
    (out / "cr").mkdir(parents=True, exist_ok=True)
    core = []
    for doc in load(rendered):
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CUSTOM_KINDS:
            group, version = key[0].split("/")
            target = out / "cr" / group / f"{key[1].lower()}_{version}"
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc))
        else:
            core.append(doc)
    (out / "core.yaml").write_text(yaml.safe_dump_all(core))


def breakages():
    """Known breakages, each of which the policy must catch."""

    def find(docs, kind, prefix):
        return next(d for d in docs if d.get("kind") == kind and d["metadata"]["name"].startswith(prefix))

    def worker_replicas(docs):
        find(docs, "Deployment", "metasync-worker")["spec"]["replicas"] = 2

    def short_grace(docs):
        pod_spec(find(docs, "Deployment", "metasync-worker"))["terminationGracePeriodSeconds"] = 30

    def writable_root(docs):
        pod_spec(find(docs, "Deployment", "metasync-api"))["containers"][0]["securityContext"][
            "readOnlyRootFilesystem"] = False

    def opening_keys_in_api(docs):
        pod_spec(find(docs, "Deployment", "metasync-api"))["containers"][0]["env"].append(
            {"name": "METASYNC_OPENING_KEYS", "value": "x"})

    def over_budget(docs):
        find(docs, "ScaledObject", "metasync-worker")["spec"]["maxReplicaCount"] = 500

    def wrong_list_length(docs):
        find(docs, "ScaledObject", "metasync-worker")["spec"]["triggers"][0]["metadata"]["listLength"] = "5"

    def egress_anywhere(docs):
        find(docs, "NetworkPolicy", "metasync-api")["spec"]["egress"].append({"to": [{"ipBlock": {
            "cidr": "0.0.0.0/0"}}]})

    def liveness_on_metrics(docs):
        pod_spec(find(docs, "Deployment", "metasync-worker"))["containers"][0]["livenessProbe"]["httpGet"][
            "path"] = "/metrics"

    def no_worker_pdb(docs):
        docs.remove(find(docs, "PodDisruptionBudget", "metasync-worker"))

    def hostname_worker_id(docs):
        env = pod_spec(find(docs, "Deployment", "metasync-worker"))["containers"][0]["env"]
        env[:] = [v for v in env if v["name"] != "METASYNC_WORKER_NAME"]

    return [worker_replicas, short_grace, writable_root, opening_keys_in_api, over_budget, wrong_list_length,
            egress_anywhere, liveness_on_metrics, no_worker_pdb, hostname_worker_id]


def self_test(rendered, name):
    docs = load(rendered)
    missed = []
    for breakage in breakages():
        broken = copy.deepcopy(docs)
        breakage(broken)
        _, failed = _count(broken, name)
        if failed == 0:
            missed.append(breakage.__name__)
    for m in missed:
        print(f"  FAIL self-test: the policy did not catch {m}")
    print(f"  {'ok  ' if not missed else 'FAIL'} self-test: {len(breakages()) - len(missed)} of "
          f"{len(breakages())} breakages caught")
    return not missed


def _count(docs, name):
    passed = failed = 0
    for _, ok, _ in checks(Rendered(docs), name):
        passed, failed = passed + bool(ok), failed + (not ok)
    return passed, failed


def main(argv):
    if len(argv) == 4 and argv[1] == "split":
        split(argv[2], argv[3])
        return 0
    if len(argv) == 4 and argv[1] == "check":
        passed, failed = run(load(argv[2]), argv[3], quiet=True)
        print(f"  policy {argv[3]}: {passed} assertions held, {failed} broken")
        return 1 if failed else 0
    if len(argv) == 4 and argv[1] == "self-test":
        return 0 if self_test(argv[2], argv[3]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
