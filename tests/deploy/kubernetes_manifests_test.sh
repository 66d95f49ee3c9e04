#!/usr/bin/env bash
# Checks the Kubernetes manifests offline (no cluster): `kubectl kustomize`
# renders deploy/kubernetes (the base) and deploy/kubernetes-mtls (the base
# plus proxies' client certificates), and each rendering is checked for
# what an operator relies on:
#   - the objects: the control plane's StatefulSet (1 replica, a volume
#     claim for --data-dir, a headless governing Service) and Service, the
#     proxies' Deployment,
#     Services and PodDisruptionBudget, all in one namespace, Service and
#     budget selectors that match the pods, target ports that exist; no
#     Namespace object (`kubectl delete -k` would delete the namespace and
#     the hand-made Secrets and the volume claim in it); an image tag other
#     than `latest`, pulled IfNotPresent; no port but the proxies' traffic
#     port open to every namespace's pods (a config stream carries every
#     private key; the control plane's metrics name Secrets);
#   - the control plane serves TLS and requires tokens (--tls-cert,
#     --tls-key, --require-tokens, --admin-token-file, --metrics-listen),
#     with readiness GET /ready and liveness GET /livez on the metrics port;
#   - proxies: 3 replicas, maxUnavailable 0, a readiness probe GET /ready on
#     the --admin port, a termination grace of at least the preStop pause
#     plus --drain-timeout, preferred anti-affinity by hostname, --node-id
#     from the pod name, an admin endpoint off loopback only with
#     --admin-token-file, --access-log-dir on a volume of its own (not the
#     state dir's), a state volume of at least twice --max-config-bytes;
#   - every file flag (certificates, keys, tokens) names a file on a
#     read-only Secret (or cert-manager CSI) volume; no Secret, PEM block or
#     token is inlined in the manifests;
#   - probes, resources and a non-root, read-only, capability-less
#     securityContext on every container;
#   - every flag is one docs/operations.md documents;
#   - mtls: --client-ca on the control plane, and proxies' certificates
#     naming spiffe://sluice/node/<pod name>, the --node-id;
#   - deploy/prometheus/prometheus.yml scrapes the Services the base
#     defines, in its namespace, and sends the proxies' admin token.
# kubectl comes from scripts/install-deps.sh (Debian's kubernetes-client
# when no kubectl is installed); without it the test fails rather than pass
# unchecked.
# Run by `bazel test //tests/deploy:kubernetes_manifests_test`, or by hand
# from the repository root.
set -euo pipefail

root=""
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  root="${TEST_SRCDIR}/${TEST_WORKSPACE:-sluice}"
fi
if [[ -z "${root}" || ! -d "${root}/deploy" ]]; then
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
fi
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
export HOME="${HOME:-${tmp}}"

kubectl="$(command -v kubectl || true)"
[[ -z "${kubectl}" && -x /usr/bin/kubectl ]] && kubectl=/usr/bin/kubectl
if [[ -z "${kubectl}" ]]; then
  echo "FAIL: no kubectl on PATH or in /usr/bin: run scripts/install-deps.sh" \
       "(Debian package kubernetes-client); the manifests were not checked" >&2
  exit 1
fi
if ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
  echo "FAIL: python3 has no yaml module: run scripts/install-deps.sh" \
       "(Debian package python3-yaml); the manifests were not checked" >&2
  exit 1
fi

# kustomize refuses files that resolve outside the directory it renders;
# Bazel's runfiles are symlinks, so render a real copy.
mkdir -p "${tmp}/deploy"
cp -rL "${root}/deploy/kubernetes" "${root}/deploy/kubernetes-mtls" "${tmp}/deploy/"
for dir in kubernetes kubernetes-mtls; do
  echo "== kubectl kustomize deploy/${dir}"
  "${kubectl}" kustomize "${tmp}/deploy/${dir}" > "${tmp}/${dir}.yaml" \
    2> "${tmp}/${dir}.err" || { cat "${tmp}/${dir}.err" >&2; echo "FAIL: deploy/${dir} does not render" >&2; exit 1; }
  grep -v "^# Warning: '\(bases\|patchesJson6902\)' is deprecated" "${tmp}/${dir}.err" >&2 || true
done

echo "== checks"
/usr/bin/python3 - "${tmp}/kubernetes.yaml" "${tmp}/kubernetes-mtls.yaml" \
  "${root}/deploy/prometheus/prometheus.yml" "${root}/docs/operations.md" <<'PY'
import re, sys, yaml

base_file, mtls_file, prometheus_file, operations_file = sys.argv[1:5]
errors = []

def error(where, message):
    errors.append("%s: %s" % (where, message))

def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

def find(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found[0] if found else None

def flags(container):
    """--name=value / --name value / --switch, as the binaries parse them."""
    result, args = {}, list(container.get("args", []))
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            i += 1
            continue
        if "=" in arg:
            name, value = arg[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            name, value = arg[2:], args[i + 1]
            i += 1
        else:
            name, value = arg[2:], True
        result[name] = value
        i += 1
    return result

def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]

def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None

def pod_spec(workload):
    return workload["spec"]["template"]["spec"]

def volume_for_file(where, workload, container, flag, path):
    """The volume `path` is on; it must be a read-only Secret or CSI mount."""
    mounts = [m for m in container.get("volumeMounts", [])
              if path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        error(where, "--%s=%s is on no volume" % (flag, path))
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    volume = volumes.get(mount["name"])
    if volume is None:
        error(where, "--%s: volume %r is not declared" % (flag, mount["name"]))
        return None
    if not mount.get("readOnly"):
        error(where, "--%s: volume %r is not mounted readOnly" % (flag, mount["name"]))
    if "secret" in volume:
        key = path[len(mount["mountPath"].rstrip("/")) + 1:]
        items = volume["secret"].get("items")
        if items and key not in [i["path"] for i in items]:
            error(where, "--%s: %s is not among the Secret's items" % (flag, key))
    elif "csi" not in volume:
        error(where, "--%s=%s: volume %r is neither a Secret nor a CSI volume"
              % (flag, path, mount["name"]))
    return volume

def check_container_basics(where, workload, container, documented):
    for probe in ("readinessProbe", "livenessProbe"):
        p = container.get(probe)
        if not p:
            error(where, "no %s" % probe)
            continue
        action = p.get("httpGet") or p.get("tcpSocket")
        if not action or port_number(container, action["port"]) is None:
            error(where, "%s: no httpGet/tcpSocket on a declared port" % probe)
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(resources.get(part, {})):
            error(where, "resources.%s lacks cpu or memory" % part)
    pod_sc = pod_spec(workload).get("securityContext", {})
    sc = container.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        error(where, "not runAsNonRoot")
    if not sc.get("readOnlyRootFilesystem"):
        error(where, "root filesystem not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        error(where, "allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        error(where, "capabilities do not drop ALL")
    for name in flags(container):
        if not re.search(r"--%s\b" % re.escape(name), documented):
            error(where, "--%s is not a flag docs/operations.md documents" % name)
    for env in container.get("env", []):
        if "value" in env and re.search(r"token|key|secret|password", env["name"], re.I):
            error(where, "env %s inlines a secret value" % env["name"])

def check_common(name, docs, documented):
    kinds = sorted("%s/%s" % (d["kind"], d["metadata"]["name"]) for d in docs)
    print("%s: %s" % (name, ", ".join(kinds)))
    errors_before = len(errors)
    for kind, obj in (("StatefulSet", "sluice-control"),
                      ("Service", "sluice-control"), ("Deployment", "sluice-proxy"),
                      ("Service", "sluice-proxy"), ("Service", "sluice-proxy-admin"),
                      ("PodDisruptionBudget", "sluice-proxy"),
                      ("NetworkPolicy", "sluice-control"), ("NetworkPolicy", "sluice-proxy")):
        if not find(docs, kind, obj):
            error(name, "no %s %s" % (kind, obj))
    if len(errors) > errors_before:
        return None
    if any(d["kind"] == "Namespace" for d in docs):
        error(name, "a Namespace object: `kubectl delete -k` would delete the namespace, "
              "its Secrets and the control plane's volume claim")
    namespaces = {d["metadata"].get("namespace") for d in docs}
    if namespaces != {"sluice"}:
        error(name, "objects in namespaces %r, expected all in sluice" % namespaces)
    for d in docs:
        if d["kind"] in ("Secret", "ConfigMap"):
            error(name, "%s %s inlined in the manifests" % (d["kind"], d["metadata"]["name"]))
    if re.search(r"-----BEGIN|slc_[A-Za-z0-9_-]{20}", open(sys.argv[1 if name == "base" else 2]).read()):
        error(name, "a PEM block or a token is inlined")

    control = find(docs, "StatefulSet", "sluice-control")
    proxy = find(docs, "Deployment", "sluice-proxy")
    cp = pod_spec(control)["containers"][0]
    px = pod_spec(proxy)["containers"][0]
    images = {c["image"] for w in (control, proxy) for c in pod_spec(w)["containers"]}
    if len(images) != 1:
        error(name, "control plane and proxies run different images %r" % images)
    for image in images:
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            error(name, "image %r: no tag or `latest` (a rollback would not bring back "
                  "the binaries it names)" % image)
    for w in (control, proxy):
        for c in pod_spec(w)["containers"]:
            if c.get("imagePullPolicy") != "IfNotPresent":
                error(name, "%s: imagePullPolicy %r, expected IfNotPresent"
                      % (c["name"], c.get("imagePullPolicy")))
    governing = find(docs, "Service", control["spec"].get("serviceName", ""))
    if governing is None or governing["spec"].get("clusterIP") != "None":
        error(name, "StatefulSet sluice-control: serviceName %r is not a headless Service"
              % control["spec"].get("serviceName"))

    # Selectors and ports of Services and the budget.
    pods = {"sluice-control": (control, cp), "sluice-proxy": (proxy, px)}
    for d in docs:
        if d["kind"] not in ("Service", "PodDisruptionBudget"):
            continue
        selector = d["spec"].get("selector", {})
        selector = selector.get("matchLabels", selector)
        matched = [(w, c) for w, c in pods.values()
                   if selector and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        where = "%s %s" % (d["kind"], d["metadata"]["name"])
        if len(matched) != 1:
            error(where, "selector %r matches %d workloads" % (selector, len(matched)))
            continue
        for p in d["spec"].get("ports", []):
            if port_number(matched[0][1], p.get("targetPort", p["port"])) is None:
                error(where, "targetPort %r is no port of the pods" % p.get("targetPort"))

    # Network policies: each selects its workload, names only its ports,
    # leaves none of them unlisted (dropped), admits the proxies to the
    # control plane's gRPC port, and opens to anyone only the traffic port.
    for d in docs:
        if d["kind"] != "NetworkPolicy":
            continue
        where = "%s NetworkPolicy %s" % (name, d["metadata"]["name"])
        selector = d["spec"]["podSelector"].get("matchLabels", {})
        matched = [(w, c) for w, c in pods.values()
                   if selector and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        if len(matched) != 1:
            error(where, "podSelector %r matches %d workloads" % (selector, len(matched)))
            continue
        workload, container = matched[0]
        covered = set()
        for rule in d["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                number = port_number(container, p["port"])
                if number is None:
                    error(where, "port %r is no port of the pods" % p["port"])
                    continue
                covered.add(number)
                if not rule.get("from") and number != 8080:
                    error(where, "port %d is open to every pod and address" % number)
                for peer in rule.get("from", []):
                    if "namespaceSelector" in peer and not peer["namespaceSelector"]:
                        error(where, "port %d admits pods of every namespace "
                              "(namespaceSelector: {}): whoever may create a pod "
                              "chooses its labels" % number)
                if number == 18000:
                    proxy_labels = proxy["spec"]["template"]["metadata"]["labels"]
                    if not any("namespaceSelector" not in peer and
                               peer.get("podSelector", {}).get("matchLabels", {}).items()
                               <= proxy_labels.items() for peer in rule.get("from", [])):
                        error(where, "the proxies may not reach the control plane's port 18000")
        for p in container.get("ports", []):
            if p["containerPort"] not in covered:
                error(where, "container port %d is in no rule: every connection to it is dropped"
                      % p["containerPort"])

    # Control plane.
    where = name + " StatefulSet sluice-control"
    f = flags(cp)
    check_container_basics(where, control, cp, documented)
    if control["spec"].get("replicas") != 1:
        error(where, "replicas %r, expected 1 (one control plane per data dir)" % control["spec"].get("replicas"))
    claims = [c["metadata"]["name"] for c in control["spec"].get("volumeClaimTemplates", [])]
    data_mount = [m for m in cp.get("volumeMounts", []) if m["mountPath"] == f.get("data-dir")]
    if not data_mount or data_mount[0]["name"] not in claims:
        error(where, "--data-dir %r is not on a volume claim" % f.get("data-dir"))
    for flag in ("tls-cert", "tls-key", "admin-token-file"):
        if not isinstance(f.get(flag), str):
            error(where, "no --%s FILE" % flag)
        else:
            volume_for_file(where, control, cp, flag, f[flag])
    if f.get("require-tokens") is not True:
        error(where, "no --require-tokens")
    if f.get("insecure"):
        error(where, "--insecure: plaintext gRPC")
    if not str(f.get("metrics-listen", "")).endswith(":18001"):
        error(where, "--metrics-listen %r, expected HOST:18001" % f.get("metrics-listen"))
    if str(f.get("listen", "")).split(":")[-1] != "18000":
        error(where, "--listen %r, expected HOST:18000" % f.get("listen"))
    # A scrape's work (the first parses every Secret's chain) is not a probe's.
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/livez")):
        get = cp.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or port_number(cp, get.get("port")) != 18001:
            error(where, "%s is not GET %s on the --metrics-listen port: %r" % (probe, path, get))

    # Proxies.
    where = name + " Deployment sluice-proxy"
    f = flags(px)
    spec = proxy["spec"]
    check_container_basics(where, proxy, px, documented)
    if spec.get("replicas") != 3:
        error(where, "replicas %r, expected 3" % spec.get("replicas"))
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    if spec.get("strategy", {}).get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0:
        error(where, "not a RollingUpdate with maxUnavailable 0: %r" % spec.get("strategy"))
    if rolling.get("maxSurge") in (None, 0, "0%"):
        error(where, "maxSurge 0 with maxUnavailable 0 cannot roll")
    admin_port = int(str(f.get("admin", "127.0.0.1:9901")).rsplit(":", 1)[1])
    ready = px.get("readinessProbe", {}).get("httpGet", {})
    if ready.get("path") != "/ready" or port_number(px, ready.get("port")) != admin_port:
        error(where, "readinessProbe is not GET /ready on the --admin port %d: %r" % (admin_port, ready))
    if not str(f.get("admin", "127.0.0.1")).startswith("127.0.0.1") and "admin-token-file" not in f:
        error(where, "--admin %s off loopback without --admin-token-file" % f.get("admin"))
    for flag in ("admin-token-file", "control-plane-ca", "control-plane-cert", "control-plane-key"):
        if flag in f:
            volume_for_file(where, proxy, px, flag, f[flag])
    if "control-plane-ca" not in f:
        error(where, "no --control-plane-ca: plaintext to the control plane")
    # Without --access-log-dir an operator token can have the proxy append
    # to any file it may write (its own state.db included).
    mounts = {m["mountPath"]: m["name"] for m in px.get("volumeMounts", [])}
    log_dir = f.get("access-log-dir")
    state_dir = str(f.get("state-dir", ""))
    if not isinstance(log_dir, str) or log_dir not in mounts:
        error(where, "--access-log-dir %r is not a mounted volume" % log_dir)
    elif any(state_dir.startswith(path) and mounts[path] == mounts[log_dir] for path in mounts):
        error(where, "--access-log-dir %s shares the state dir's volume" % log_dir)
    # The state file is written beside the one it replaces: a config of
    # --max-config-bytes (32 MiB by default) needs twice that.
    for v in pod_spec(proxy).get("volumes", []):
        if any(state_dir.startswith(path) and name == v["name"] for path, name in mounts.items()):
            size = str(v.get("emptyDir", {}).get("sizeLimit", ""))
            if size.endswith("Mi") and int(size[:-2]) < 64 + 16:
                error(where, "state volume sizeLimit %s: a 32 MiB config is written beside "
                      "the one it replaces" % size)
    if not str(f.get("control-plane", "")).startswith("sluice-control"):
        error(where, "--control-plane %r is not the Service sluice-control" % f.get("control-plane"))
    drain = seconds(str(f.get("drain-timeout", "30s")))
    pre_stop = px.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] and len(pre_stop) == 2 else 0
    grace = pod_spec(proxy).get("terminationGracePeriodSeconds", 30)
    if not pause:
        error(where, "no preStop pause (`sleep N`) before SIGTERM")
    if drain is None or grace < pause + drain:
        error(where, "terminationGracePeriodSeconds %r < preStop %ss + --drain-timeout %r"
              % (grace, pause, f.get("drain-timeout")))
    if f.get("node-id") != "$(POD_NAME)":
        error(where, "--node-id %r, expected $(POD_NAME)" % f.get("node-id"))
    pod_name = [e for e in px.get("env", []) if e["name"] == "POD_NAME"]
    if not pod_name or pod_name[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        error(where, "POD_NAME is not the pod's name (downward API)")
    preferred = pod_spec(proxy).get("affinity", {}).get("podAntiAffinity", {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution", [])
    labels = proxy["spec"]["template"]["metadata"]["labels"]
    if not any(t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname" and
               t["podAffinityTerm"].get("labelSelector", {}).get("matchLabels", {}).items() <= labels.items()
               for t in preferred):
        error(where, "no preferred podAntiAffinity by kubernetes.io/hostname on its own pods")
    pdb = find(docs, "PodDisruptionBudget", "sluice-proxy")["spec"]
    if not (pdb.get("maxUnavailable") == 1 or (isinstance(pdb.get("minAvailable"), int)
                                             and 2 <= pdb["minAvailable"] < spec["replicas"])):
        error(name + " PodDisruptionBudget", "neither maxUnavailable 1 nor minAvailable 2..replicas-1: %r" % pdb)
    return docs

documented = open(operations_file).read()
base = check_common("base", load(base_file), documented)
mtls = check_common("mtls", load(mtls_file), documented)

if base:
    cp = pod_spec(find(base, "StatefulSet", "sluice-control"))["containers"][0]
    if "client-ca" in flags(cp):
        error("base", "--client-ca without proxies' certificates: proxies would be refused")
if mtls:
    control = find(mtls, "StatefulSet", "sluice-control")
    proxy = find(mtls, "Deployment", "sluice-proxy")
    cp, px = pod_spec(control)["containers"][0], pod_spec(proxy)["containers"][0]
    f = flags(cp)
    if not isinstance(f.get("client-ca"), str):
        error("mtls", "sluice-control has no --client-ca FILE")
    else:
        volume_for_file("mtls StatefulSet sluice-control", control, cp, "client-ca", f["client-ca"])
    f = flags(px)
    issuer = find(mtls, "Issuer", "sluice-proxy-ca")
    if not issuer or issuer["metadata"].get("namespace") != "sluice":
        error("mtls", "no Issuer sluice-proxy-ca in namespace sluice")
    for flag in ("control-plane-cert", "control-plane-key"):
        if not isinstance(f.get(flag), str):
            error("mtls", "proxies have no --%s FILE" % flag)
            continue
        volume = volume_for_file("mtls Deployment sluice-proxy", proxy, px, flag, f[flag])
        if not volume or "csi" not in volume:
            continue
        attrs = volume["csi"].get("volumeAttributes", {})
        uri = "spiffe://sluice/node/" + f.get("node-id", "").replace("$(POD_NAME)", "${POD_NAME}")
        if attrs.get("csi.cert-manager.io/uri-sans") != uri:
            error("mtls", "the certificate's URI SAN %r is not %s (the --node-id)"
                  % (attrs.get("csi.cert-manager.io/uri-sans"), uri))
        if attrs.get("csi.cert-manager.io/issuer-name") != "sluice-proxy-ca":
            error("mtls", "the certificate is not issued by Issuer sluice-proxy-ca")
        if "client auth" not in attrs.get("csi.cert-manager.io/key-usages", ""):
            error("mtls", "the certificate lacks the client auth usage")
        uid = pod_spec(proxy)["securityContext"].get("runAsGroup")
        if attrs.get("csi.cert-manager.io/fs-group") != str(uid):
            error("mtls", "csi fs-group %r is not the pod's group %r: the key would be unreadable"
                  % (attrs.get("csi.cert-manager.io/fs-group"), uid))

# Prometheus scrapes what the base defines.
if base:
    prometheus = yaml.safe_load(open(prometheus_file))
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    proxy = find(base, "Deployment", "sluice-proxy")
    px = pod_spec(proxy)["containers"][0]
    admin = find(base, "Service", "sluice-proxy-admin")
    ns = admin["metadata"]["namespace"]
    job = jobs.get("sluice-proxy", {})
    dns = (job.get("dns_sd_configs") or [{}])[0]
    admin_port = int(str(flags(px)["admin"]).rsplit(":", 1)[1])
    if dns.get("names") != ["sluice-proxy-admin.%s.svc.cluster.local" % ns] or dns.get("port") != admin_port:
        error("prometheus.yml", "job sluice-proxy does not scrape sluice-proxy-admin.%s.svc.cluster.local:%d"
              % (ns, admin_port))
    if admin["spec"].get("clusterIP") != "None" or not admin["spec"].get("publishNotReadyAddresses"):
        error("Service sluice-proxy-admin", "not headless with publishNotReadyAddresses")
    if "admin-token-file" in flags(px) and not job.get("authorization", {}).get("credentials_file"):
        error("prometheus.yml", "proxies require an admin token; job sluice-proxy sends none")
    targets = jobs.get("sluice-control", {}).get("static_configs", [{}])[0].get("targets", [])
    if targets != ["sluice-control.%s.svc.cluster.local:18001" % ns]:
        error("prometheus.yml", "job sluice-control scrapes %r, not sluice-control.%s.svc.cluster.local:18001"
              % (targets, ns))

for e in errors:
    print("FAIL: " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
echo "kubernetes manifest checks passed"
