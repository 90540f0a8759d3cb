#!/usr/bin/env python3
"""The checks of tests/e2e/test_deploy_manifests.sh (its header says what and why).

    deploy_manifests.py WORK_DIR

Run from the repository's root with LION_BUILD_DIR (and LION_BIN_DIR) set; WORK_DIR is an
empty folder the caller removes. Every command a deployment in deploy/ starts is run here with
--check-config, with the environment, files and keys that deployment gives it, its container
paths mapped onto folders of WORK_DIR. Prints what it ran and every failure; exits 1 when
anything failed.
"""
import base64
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import yaml

ROOT = os.getcwd()
BUILD = os.path.abspath(os.environ["LION_BUILD_DIR"])
BIN = os.path.abspath(os.environ.get("LION_BIN_DIR") or os.path.join(BUILD, "services"))
WORK = os.path.abspath(sys.argv[1])
TINY = os.path.join(ROOT, "models", "tiny-lion")
DEPLOY = os.path.join(ROOT, "deploy")

# The binaries the images and units name, here. lion-make-keys is deploy/make-keys.sh in the
# image (deploy/Containerfile).
BINARIES = {name: os.path.join(BIN, name) for name in
            ("lion-gateway", "lion-vision", "lion-tagger", "lion-aggregator", "lion-llm")}
BINARIES.update({
    "lion-keygen": os.path.join(BUILD, "tools", "keygen", "lion-keygen"),
    "lion-tap": os.path.join(BUILD, "tools", "tap", "lion-tap"),
    "lion-batch": os.path.join(BUILD, "tools", "batch", "lion-batch"),
    "lion-make-keys": os.path.join(DEPLOY, "make-keys.sh"),
})
SERVICES = {"lion-gateway", "lion-vision", "lion-tagger", "lion-aggregator", "lion-llm"}
STAGES = ("vision", "tagger", "aggregator", "llm")  # bind-base port + index

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def say(msg):
    print(msg, flush=True)


def binary(name):
    """The file that runs for a command named name in a manifest ("lion-vision",
    "/usr/local/bin/lion-vision", "install"), or None."""
    base = os.path.basename(name)
    if base in BINARIES:
        return BINARIES[base]
    if "/" not in name:
        return shutil.which(name)
    return name if os.path.exists(name) else None


class Paths:
    """Container (or unit) paths -> folders of WORK_DIR: the mounts of one container."""

    def __init__(self):
        self.mounts = []

    def add(self, inside, here):
        self.mounts.append((inside.rstrip("/") or "/", here))

    def map(self, value):
        for inside, here in sorted(self.mounts, key=lambda m: -len(m[0])):
            if value == inside or value.startswith(inside + "/"):
                return here + value[len(inside):]
        return value

    def map_arg(self, arg):
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            return name + "=" + self.map(value)
        return self.map(arg)


def run(label, argv, env, paths, check_config=True, expect_ok=True, want=None):
    """Runs argv (a manifest's command, paths mapped) with env; a service gets --check-config.
    expect_ok: exit 0 and "configuration OK" (services); else non-zero, with want in its
    output. Returns the completed process, or None."""
    exe = binary(argv[0])
    if not exe:
        fail(f"{label}: {argv[0]}: not a binary of the build (or of this machine)")
        return None
    args = [paths.map_arg(a) for a in argv[1:]]
    service = os.path.basename(argv[0]) in SERVICES
    if service and check_config:
        args.append("--check-config")
    full_env = {"PATH": os.environ["PATH"]}
    full_env.update({k: paths.map(v) for k, v in env.items()})
    try:
        p = subprocess.run([exe] + args, env=full_env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        fail(f"{label}: did not end in 120 s: {exe} {shlex.join(args)}")
        return None
    out = p.stdout + p.stderr
    if expect_ok:
        if p.returncode != 0 or (service and "configuration OK" not in p.stdout):
            fail(f"{label}: exit {p.returncode}: {exe} {shlex.join(args)}\n{out.strip()}")
            return None
        line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else f"exit 0: {os.path.basename(exe)}"
        say(f"{label}: {line}")
    else:
        if p.returncode == 0:
            fail(f"{label}: was accepted, but must be refused: {exe} {shlex.join(args)}\n{out.strip()}")
            return None
        if want and want not in out:
            fail(f"{label}: refused, but the message does not say '{want}': {out.strip()}")
            return None
        say(f"{label}: refused as it must be (exit {p.returncode}): {out.strip().splitlines()[-1]}")
    return p


def make_keys(folder):
    env = dict(os.environ, LION_KEYGEN=BINARIES["lion-keygen"])
    p = subprocess.run(["bash", BINARIES["lion-make-keys"], folder], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"deploy/make-keys.sh {folder}: {p.stdout}{p.stderr}")


def gateway_ports(argv):
    """--listen's port and --bind-base's first port of a gateway's command line."""
    listen, base = 8080, 5551
    for i, a in enumerate(argv):
        for flag in ("--listen", "--bind-base"):
            value = a.split("=", 1)[1] if a.startswith(flag + "=") else argv[i + 1] if a == flag else None
            if value is not None:
                port = int(value.rsplit(":", 1)[1])
                if flag == "--listen":
                    listen = port
                else:
                    base = port
    return listen, base


def option_value(argv, env, flag, var):
    """A worker option's value: --flag=V or --flag V on the command line, else $VAR."""
    for i, a in enumerate(argv):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
    return env.get(var)


# --- Kubernetes ---------------------------------------------------------------------------------

def kustomize_command():
    """(argv prefix, major version or None) of the kustomize here, or (None, None)."""
    if os.environ.get("LION_TEST_NO_KUSTOMIZE"):
        return None, None
    kubectl = shutil.which("kubectl")
    if kubectl:
        v = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
        m = re.search(r"Kustomize Version: v(\d+)", v)
        # kubectl before 1.24 does not print it; those (1.14-1.20) embed kustomize v2.0.3
        return [kubectl, "kustomize"], int(m.group(1)) if m else 2
    kustomize = shutil.which("kustomize")
    if kustomize:
        v = subprocess.run([kustomize, "version"], capture_output=True, text=True).stdout
        m = re.search(r"v(\d+)\.", v)
        return [kustomize, "build"], int(m.group(1)) if m else None
    return None, None


def render_plain(folder):
    """What kustomize renders for the parts deploy/k8s uses (resources, bases, generators,
    namespace, images, deleting patches), without the names' hash suffixes: for machines
    without kubectl or kustomize."""
    with open(os.path.join(folder, "kustomization.yaml")) as f:
        k = yaml.safe_load(f)
    docs = []
    for entry in k.get("bases", []) + k.get("resources", []):
        path = os.path.join(folder, entry)
        if os.path.isdir(path):
            docs += render_plain(path)
        else:
            with open(path) as f:
                docs += [d for d in yaml.safe_load_all(f) if d]
    for kind, gens in (("ConfigMap", k.get("configMapGenerator", [])), ("Secret", k.get("secretGenerator", []))):
        for g in gens:
            data = {}
            for lit in g.get("literals", []):
                key, value = lit.split("=", 1)
                data[key] = value.encode()
            for entry in g.get("files", []):
                key, path = entry.split("=", 1) if "=" in entry else (os.path.basename(entry), entry)
                with open(os.path.join(folder, path), "rb") as f:
                    data[key] = f.read()
            data = {key: base64.b64encode(v).decode() if kind == "Secret" else v.decode() for key, v in data.items()}
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": g["name"]}, "data": data})
    for patch in k.get("patchesStrategicMerge", []):
        with open(os.path.join(folder, patch)) as f:
            for p in yaml.safe_load_all(f):
                if p and p.get("$patch") == "delete":
                    docs = [d for d in docs if not (d["kind"] == p["kind"] and
                                                    d["metadata"]["name"] == p["metadata"]["name"])]
    if "namespace" in k:
        for d in docs:
            if d["kind"] != "Namespace":
                d["metadata"]["namespace"] = k["namespace"]
    for img in k.get("images", []):
        new = img.get("newName", img["name"]) + (":" + img["newTag"] if "newTag" in img else "")
        for d in docs:
            pod = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                if c.get("image") == img["name"]:
                    c["image"] = new
    return docs


def render(folder, kustomize, label):
    if not kustomize:
        return render_plain(folder)
    p = subprocess.run(kustomize + [folder], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{label}: {' '.join(kustomize)} {folder}: {p.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def find(docs, kind, name):
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    return None


def object_data(obj):
    """A ConfigMap's or Secret's entries as bytes."""
    data = {}
    if obj["kind"] == "Secret":
        data.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
        data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    else:
        data.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def pod_volumes(docs, pod, folder, label):
    """The pod's volumes as the kubelet makes them, in folder: ConfigMap and Secret files with
    their modes (with fsGroup, the kubelet adds group read: 0440 | mode), emptyDirs, and the
    model claim holding the tiny model as its folder "lion" (LION_MODEL=/models/lion)."""
    fs_group = (pod.get("securityContext") or {}).get("fsGroup")
    volumes = {}
    for v in pod.get("volumes", []):
        here = os.path.join(folder, "volume-" + v["name"])
        os.makedirs(here)
        volumes[v["name"]] = here
        source = v.get("configMap") or v.get("secret")
        if source is not None:
            kind = "ConfigMap" if "configMap" in v else "Secret"
            name = source.get("name") or source.get("secretName")
            obj = find(docs, kind, name)
            if obj is None:
                fail(f"{label}: volume {v['name']}: no {kind} {name} in the manifests")
                continue
            data = object_data(obj)
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    fail(f"{label}: volume {v['name']}: {kind} {name} has no key {item['key']}")
                    continue
                path = os.path.join(here, item["path"])
                with open(path, "wb") as f:
                    f.write(data[item["key"]])
                mode = item.get("mode", source.get("defaultMode", 0o644))
                if fs_group is not None:
                    mode |= 0o440
                os.chmod(path, mode)
        elif "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            if find(docs, "PersistentVolumeClaim", claim) is None:
                fail(f"{label}: volume {v['name']}: no PersistentVolumeClaim {claim} in the manifests")
            os.symlink(TINY, os.path.join(here, "lion"))
        elif "emptyDir" not in v:
            fail(f"{label}: volume {v['name']}: a kind this test does not know: {sorted(v)}")
    return volumes


def expand_k8s(text, env):
    """Kubernetes' $(VAR) in command, args and env values: a variable not defined stays as
    written, $$ is $."""
    out, i = "", 0
    while i < len(text):
        if text.startswith("$$", i):
            out, i = out + "$", i + 2
        elif text.startswith("$(", i) and text.find(")", i) > 0:
            j = text.find(")", i)
            name = text[i + 2:j]
            out, i = out + (env[name] if name in env else text[i:j + 1]), j + 1
        else:
            out, i = out + text[i], i + 1
    return out


def container_env(docs, c, pod_name, namespace, label):
    env = {}
    for source in c.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        obj = find(docs, kind, ref["name"])
        if obj is None:
            fail(f"{label}: envFrom: no {kind} {ref['name']}")
            continue
        env.update({source.get("prefix", "") + k: v.decode() for k, v in object_data(obj).items()})
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = expand_k8s(str(e["value"]), env)
            continue
        source = e.get("valueFrom", {})
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            env[e["name"]] = {"metadata.name": pod_name, "metadata.namespace": namespace}.get(field, "")
        else:
            ref = source.get("configMapKeyRef") or source.get("secretKeyRef")
            kind = "ConfigMap" if "configMapKeyRef" in source else "Secret"
            obj = find(docs, kind, ref["name"])
            if obj is None or ref["key"] not in object_data(obj):
                fail(f"{label}: env {e['name']}: no {kind} {ref['name']} with key {ref['key']}")
            else:
                env[e["name"]] = object_data(obj)[ref["key"]].decode()
    return env


def container_argv(c, env, label):
    argv = [expand_k8s(str(a), env) for a in c.get("command", []) + c.get("args", [])]
    if not c.get("command"):
        fail(f"{label}: no command (the image has no entrypoint)")
    for a in argv:
        if "$(" in a:
            fail(f"{label}: '{a}' names a variable the container does not have")
    return argv


def check_deployment(docs, dep, label, variant=None):
    """Runs every container of the Deployment's pod (init containers for real, services with
    --check-config). variant(container, argv, env, paths) may change a container's command
    line (and its mounts: volumes maps the pod's volume names to their folders) before it
    runs, and returns (expect_ok, want) for it. Returns {container name: (argv, env, spec)}."""
    pod = dep["spec"]["template"]["spec"]
    name = dep["metadata"]["name"]
    folder = os.path.join(WORK, "k8s-pods", f"{label}-{name}".replace(" ", "-").replace("/", "-"))
    os.makedirs(folder)
    volumes = pod_volumes(docs, pod, folder, label)
    namespace = dep["metadata"].get("namespace", "default")
    seen = {}
    for kind in ("initContainers", "containers"):
        for c in pod.get(kind, []):
            clabel = f"{label} {name}/{c['name']}"
            paths = Paths()
            for m in c.get("volumeMounts", []):
                if m["name"] in volumes:
                    paths.add(m["mountPath"], os.path.join(volumes[m["name"]], m.get("subPath", "")).rstrip("/"))
                else:
                    fail(f"{clabel}: mounts {m['name']}, which the pod does not have")
            env = container_env(docs, c, name + "-0", namespace, clabel)
            argv = container_argv(c, env, clabel)
            if not argv:
                continue
            expect_ok, want = True, None
            if variant:
                expect_ok, want = variant(c, argv, env, paths, volumes)
            run(clabel, argv, env, paths, expect_ok=expect_ok, want=want)
            seen[c["name"]] = (argv, env, c)
    return seen


def check_k8s():
    kustomize, major = kustomize_command()
    tree = os.path.join(WORK, "k8s")
    shutil.copytree(os.path.join(DEPLOY, "k8s"), tree, ignore=shutil.ignore_patterns("*.key", "*.pub", "api-keys"))
    make_keys(os.path.join(tree, "overlays", "example", "keys"))
    if kustomize:
        say(f"k8s: rendering with {' '.join(kustomize)} (kustomize v{major})")
    else:
        why = "LION_TEST_NO_KUSTOMIZE is set" if os.environ.get("LION_TEST_NO_KUSTOMIZE") else \
            "neither kubectl nor kustomize is installed"
        say(f"k8s: {why}: the kustomizations were NOT rendered by kustomize; this test read them itself "
            "(resources, bases, generators, namespace, images, deleting patches), without hash suffixes")
    base = render(os.path.join(tree, "base"), kustomize, "k8s base")
    docs = render(os.path.join(tree, "overlays", "example"), kustomize, "k8s overlays/example")
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in base)
    say(f"k8s base: {len(base)} objects: {', '.join(f'{k} {n}' for k, n in kinds)}")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for want in ["lion-gateway"] + [f"lion-{s}" for s in STAGES]:
        if want not in deployments:
            fail(f"k8s: no Deployment {want}")
    runs = {}
    for name, dep in sorted(deployments.items()):
        runs[name] = check_deployment(docs, dep, "k8s")
    check_k8s_wiring(docs, deployments, runs)
    check_autoscaling(docs, deployments)
    check_k8s_refusals(docs, deployments)
    commands = {os.path.basename(argv[0]) for pod in runs.values() for argv, _, _ in pod.values()}
    # KEDA: its ScaledObjects replace the HPAs
    if kustomize and major is not None and major < 3:
        say(f"k8s overlays/keda: NOT rendered: kustomize v{major} ignores '$patch: delete' of autoscaling/v2 "
            "objects (the overlay says it needs kustomize 3 or later)")
    else:
        keda = render(os.path.join(tree, "overlays", "keda"), kustomize, "k8s overlays/keda")
        hpas = [d for d in keda if d["kind"] == "HorizontalPodAutoscaler"]
        scaled = sorted(d["spec"]["scaleTargetRef"]["name"] for d in keda if d["kind"] == "ScaledObject")
        if hpas or scaled != sorted(f"lion-{s}" for s in STAGES):
            fail(f"k8s overlays/keda: {len(hpas)} HPAs left, ScaledObjects for {scaled}")
        else:
            say(f"k8s overlays/keda: ScaledObjects for {', '.join(scaled)}, no HPA left")
    return commands


def check_k8s_wiring(docs, deployments, runs):
    """Workers reach the gateway: LION_GATEWAY's host is a Service selecting the gateway's pod,
    listed before the pod is ready, whose port leads to the gateway's endpoint of that stage.
    Probes point where the binaries answer."""
    gw = deployments.get("lion-gateway")
    if not gw or "gateway" not in runs.get("lion-gateway", {}):
        return
    argv, _, c = runs["lion-gateway"]["gateway"]
    listen, bind_base = gateway_ports(argv)
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    labels = gw["spec"]["template"]["metadata"]["labels"]
    for probe in ("livenessProbe", "readinessProbe"):
        get = c.get(probe, {}).get("httpGet")
        port = ports.get(get.get("port"), get.get("port")) if get else None
        if not get or get.get("path") not in ("/healthz", "/readyz") or port != listen:
            fail(f"k8s gateway {probe}: {get} is not /healthz or /readyz on --listen's port {listen}")
    for stage in STAGES:
        run_ = runs.get(f"lion-{stage}", {}).get(stage)
        if not run_:
            continue
        wargv, wenv, wc = run_
        endpoint = option_value(wargv, wenv, "--gateway", "LION_GATEWAY") or ""
        m = re.match(r"tcp://([^:/]+):(\d+)$", endpoint)
        if not m:
            fail(f"k8s lion-{stage}: gateway endpoint '{endpoint}' is not tcp://SERVICE:PORT")
            continue
        host, port = m.group(1).split(".")[0], int(m.group(2))
        svc = find(docs, "Service", host)
        if not svc:
            fail(f"k8s lion-{stage}: {endpoint}: no Service {host}")
            continue
        if any(labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
            fail(f"k8s lion-{stage}: Service {host} does not select the gateway's pod")
        if not svc["spec"].get("publishNotReadyAddresses"):
            fail(f"k8s Service {host}: without publishNotReadyAddresses the gateway (ready only once workers "
                 "joined) is never reachable by its workers")
        target = [p.get("targetPort", p["port"]) for p in svc["spec"]["ports"] if p["port"] == port]
        target = ports.get(target[0], target[0]) if target else None
        if target != bind_base + STAGES.index(stage):
            fail(f"k8s lion-{stage}: {endpoint} leads to the gateway's port {target}, "
                 f"not its {stage} endpoint {bind_base + STAGES.index(stage)}")
        else:
            say(f"k8s lion-{stage}: {endpoint} -> Service {host} -> the gateway's {stage} endpoint :{target}")
        ready = option_value(wargv, wenv, "--ready-file", "LION_READY_FILE")
        probe = (wc.get("readinessProbe") or {}).get("exec", {}).get("command", [])
        if not ready or probe != ["test", "-e", ready]:
            fail(f"k8s lion-{stage}: readiness probe {probe} does not test its --ready-file {ready}")


def metric_names(text):
    return set(re.findall(r"\blion_[a-z_]+\b", text))


def check_autoscaling(docs, deployments):
    """An HPA per stage, on an External metric the adapter rule defines, from metrics the
    gateway exports; the KEDA queries on exported metrics too."""
    with open(os.path.join(ROOT, "services", "gateway", "metrics.c")) as f:
        exported = set(re.findall(r'"(lion_[a-z_]+)', f.read()))
    with open(os.path.join(DEPLOY, "k8s", "monitoring", "prometheus-adapter-rules.yaml")) as f:
        rules = yaml.safe_load(f)["externalRules"]
    defined = {r["name"]["as"]: r for r in rules}
    for r in rules:
        used = metric_names(r["seriesQuery"] + r["metricsQuery"])
        if used - exported:
            fail(f"k8s monitoring: the adapter rule {r['name']['as']} uses {sorted(used - exported)}, "
                 "which the gateway's /metrics does not have")
    with open(os.path.join(DEPLOY, "k8s", "overlays", "keda", "scaledobjects.yaml")) as f:
        for so in yaml.safe_load_all(f):
            if not so:
                continue
            for t in so["spec"]["triggers"]:
                used = metric_names(t["metadata"]["query"])
                if used - exported or not used:
                    fail(f"k8s keda {so['metadata']['name']}: query uses {sorted(used - exported)}, "
                         "which the gateway's /metrics does not have")
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    for stage in STAGES:
        hpa = hpas.get(f"lion-{stage}")
        if not hpa:
            fail(f"k8s: no HorizontalPodAutoscaler for lion-{stage}")
            continue
        for m in hpa["spec"]["metrics"]:
            ext = m.get("external", {}).get("metric", {})
            name, sel = ext.get("name"), ext.get("selector", {}).get("matchLabels", {})
            if name not in defined or sel.get("stage") != stage:
                fail(f"k8s HPA lion-{stage}: metric {name} {sel} is not the adapter's lion_stage_demand of {stage}")
            else:
                say(f"k8s HPA lion-{stage}: {name}{{stage=\"{stage}\"}} (queue + outstanding jobs), "
                    f"average {m['external']['target'].get('averageValue')} per replica")


def check_k8s_refusals(docs, deployments):
    """The same pods, broken on purpose, must be refused: the test can tell."""
    def typo(c, argv, env, paths, volumes):
        if c["name"] == "vision":
            argv[:] = [a.replace("--threads", "--thread") for a in argv]
            return False, "--thread"
        return True, None

    def secret_in_place(c, argv, env, paths, volumes):
        # the key pair read from the Secret volume itself (0440 with fsGroup), not the copy
        if c["name"] == "tagger":
            paths.add("/etc/lion/secret", volumes["curve-key"])
            env["LION_CURVE_KEY"] = "/etc/lion/secret/curve.key"
            return False, "chmod 600"
        return True, None

    def no_api_keys(c, argv, env, paths, volumes):
        if c["name"] == "gateway":
            argv[:] = [a for a in argv if not a.startswith("--api-keys")]
            return False, "--api-keys"
        return True, None

    for dep, variant, what in (("lion-vision", typo, "a mistyped flag"),
                               ("lion-tagger", secret_in_place, "a key pair others may read"),
                               ("lion-gateway", no_api_keys, "no API keys off loopback")):
        if dep in deployments:
            say(f"k8s, broken on purpose ({what}):")
            check_deployment(docs, deployments[dep], f"k8s-broken-{variant.__name__}", variant)


# --- compose ------------------------------------------------------------------------------------

def interpolate(value, env):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR, $$ in every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        if m.group(2) == ":-":
            return env.get(name) or m.group(3)
        if m.group(2) == "-":
            return env.get(name, m.group(3))
        return env.get(name, "")
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, value)


def check_compose():
    path = os.path.join(DEPLOY, "compose.yaml")
    with open(path) as f:
        compose = interpolate(yaml.safe_load(f), {})  # the defaults: no LION_* from this machine
    named = {}
    for name in compose.get("volumes") or {}:
        named[name] = os.path.join(WORK, "compose-volumes", name)
        os.makedirs(named[name])
    services = compose["services"]

    def paths_of(svc, label):
        paths = Paths()
        for v in svc.get("volumes", []):
            parts = v.split(":")
            src, dst = parts[0], parts[1]
            if src in named:
                paths.add(dst, named[src])
            elif src.startswith((".", "/")):
                here = os.path.normpath(os.path.join(DEPLOY, src))
                if not os.path.exists(here):
                    fail(f"{label}: volume {v}: {here} does not exist")
                paths.add(dst, here)
            else:
                fail(f"{label}: volume {v}: not a named volume nor a path")
        for t in svc.get("tmpfs", []):
            here = os.path.join(WORK, "compose-tmpfs", label.split()[-1], t.strip("/"))
            os.makedirs(here, exist_ok=True)
            paths.add(t, here)
        return paths

    def env_of(svc):
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        return {k: str(v) for k, v in env.items() if v is not None}

    def argv_of(svc):
        cmd = svc.get("command")
        return shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd or []]

    # the services each service waits for start first ("keys" makes the keys)
    order = sorted(services, key=lambda s: (s != "keys", s != "gateway", s))
    runs = {}
    for name in order:
        svc, label = services[name], f"compose {name}"
        argv = argv_of(svc)
        if not argv:
            fail(f"{label}: no command (the image has no entrypoint)")
            continue
        env = env_of(svc)
        if os.path.basename(argv[0]) == "lion-make-keys":
            env["LION_KEYGEN"] = BINARIES["lion-keygen"]
        run(label, argv, env, paths_of(svc, label))
        runs[name] = (argv, env, svc)
    # wiring: workers to the gateway service's stage endpoints, health checks where it answers
    if "gateway" in runs:
        listen, bind_base = gateway_ports(runs["gateway"][0])
        test = runs["gateway"][2].get("healthcheck", {}).get("test", [])
        if not any(f"127.0.0.1:{listen}/readyz" in t or f"127.0.0.1:{listen}/healthz" in t for t in test):
            fail(f"compose gateway: health check {test} does not ask --listen's port {listen}")
        for stage in STAGES:
            if stage not in runs:
                fail(f"compose: no {stage} service")
                continue
            argv, env, svc = runs[stage]
            endpoint = option_value(argv, env, "--gateway", "LION_GATEWAY") or ""
            if endpoint != f"tcp://gateway:{bind_base + STAGES.index(stage)}":
                fail(f"compose {stage}: gateway endpoint {endpoint} is not the gateway service's {stage} endpoint")
            ready = option_value(argv, env, "--ready-file", "LION_READY_FILE")
            if svc.get("healthcheck", {}).get("test") != ["CMD", "test", "-e", ready]:
                fail(f"compose {stage}: health check {svc.get('healthcheck')} does not test its ready file {ready}")
    # broken on purpose: a flag the llm does not have
    if "llm" in runs:
        argv, env, svc = runs["llm"]
        run("compose llm (broken on purpose: --beams)", argv + ["--beams", "5"], env, paths_of(svc, "compose llm"),
            expect_ok=False, want="--beams")
    return runs


# --- systemd ------------------------------------------------------------------------------------

def read_unit(path):
    """[(section, key, value)] of a unit file, continuation lines joined."""
    entries, section, pending = [], None, ""
    with open(path) as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("["):
                section = s.strip("[]")
            else:
                key, value = s.split("=", 1)
                entries.append((section, key.strip(), value.strip()))
    return entries


def specifiers(value, instance, creds, label):
    def one(m):
        c = m.group(1)
        known = {"i": instance, "I": instance, "H": socket.gethostname(), "d": creds, "%": "%"}
        if c not in known:
            fail(f"{label}: specifier %{c} is not one this test knows")
        return known.get(c, "")
    return re.sub(r"%(.)", one, value)


def read_env_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            s = line.strip()
            if s and not s.startswith("#"):
                key, value = s.split("=", 1)
                env[key.strip()] = " ".join(shlex.split(value)) if value.strip()[:1] in "\"'" else value.strip()
    return env


def expand_exec(words, env):
    """systemd's ExecStart: $VAR becomes its words, ${VAR} one word."""
    out = []
    for w in words:
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if m:
            out += env.get(m.group(1), "").split()
        else:
            out.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda n: env.get(n.group(1), ""), w))
    return out


def check_systemd():
    """Every unit's ExecStart with its Environment=, EnvironmentFile= (the example beside it:
    /etc/lion/STAGE-1.env is deploy/systemd/STAGE.env) and LoadCredential= (copied 0400 into
    a credentials folder, as systemd does), on the documented layout: /etc/lion/keys from
    deploy/make-keys.sh, the model in /var/lib/lion/models/lion-flant5."""
    folder = os.path.join(WORK, "systemd")
    keys = os.path.join(folder, "keys")
    make_keys(keys)
    units = sorted(f for f in os.listdir(os.path.join(DEPLOY, "systemd")) if f.endswith("@.service"))
    for stage in ("gateway",) + STAGES:
        if f"lion-{stage}@.service" not in units:
            fail(f"systemd: no lion-{stage}@.service")
    for unit in units:
        label = f"systemd {unit.replace('@', '@1')}"
        paths = Paths()
        paths.add("/etc/lion/keys", keys)
        paths.add("/var/lib/lion/models/lion-flant5", TINY)
        creds = os.path.join(folder, unit, "credentials")
        os.makedirs(creds)
        env, exec_start = {}, None
        for section, key, value in read_unit(os.path.join(DEPLOY, "systemd", unit)):
            value = specifiers(value, "1", creds, label)
            if key == "Environment":
                for assignment in shlex.split(value):
                    k, v = assignment.split("=", 1)
                    env[k] = v
            elif key == "EnvironmentFile":
                optional = value.startswith("-")
                m = re.fullmatch(r"/etc/lion/([a-z]+)-1\.env", value.lstrip("-"))
                example = os.path.join(DEPLOY, "systemd", m.group(1) + ".env") if m else None
                if example and os.path.exists(example):
                    env.update(read_env_file(example))
                elif not optional:
                    fail(f"{label}: EnvironmentFile={value}: no example deploy/systemd/NAME.env for it")
            elif key == "LoadCredential":
                cred, source = value.split(":", 1)
                here = paths.map(source)
                if not os.path.exists(here):
                    fail(f"{label}: LoadCredential={value}: {source} is not made by deploy/make-keys.sh")
                    continue
                shutil.copyfile(here, os.path.join(creds, cred))
                os.chmod(os.path.join(creds, cred), 0o400)
            elif key == "ExecStart":
                exec_start = value
        if not exec_start:
            fail(f"{label}: no ExecStart")
            continue
        argv = expand_exec(shlex.split(exec_start.lstrip("-@:+!")), env)
        if not argv[0].startswith("/usr/local/bin/"):
            fail(f"{label}: ExecStart runs {argv[0]}, not a binary of /usr/local/bin (deploy/Containerfile's and "
                 "the docs' install layout)")
        run(label, argv, env, paths)
    verify_units(units)


def verify_units(units):
    """systemd-analyze verify on copies whose /usr/local/bin/ is the build's folder (it checks
    that ExecStart's binary exists)."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        say("systemd: systemd-analyze is not installed: the units were NOT verified by it")
        return
    folder = os.path.join(WORK, "systemd-verify")
    os.makedirs(folder)
    for unit in units:
        with open(os.path.join(DEPLOY, "systemd", unit)) as f:
            text = f.read()
        for name, path in BINARIES.items():
            text = text.replace("/usr/local/bin/" + name, path)
        with open(os.path.join(folder, unit), "w") as f:
            f.write(text)
    for unit in units:
        instance = os.path.join(folder, unit.replace("@", "@1"))
        p = subprocess.run([analyze, "verify", "--man=no", instance], capture_output=True, text=True)
        out = (p.stdout + p.stderr).strip()
        if p.returncode != 0 or out:
            fail(f"systemd-analyze verify {unit.replace('@', '@1')}: exit {p.returncode}: {out}")
        else:
            say(f"systemd-analyze verify {unit.replace('@', '@1')}: clean")


# --- the image ----------------------------------------------------------------------------------

def check_containerfile(commands):
    """Every binary the manifests run is put on the image's PATH (/usr/local/bin), and the
    image's user is the one the manifests name."""
    with open(os.path.join(DEPLOY, "Containerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    installed, user = set(), None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and words[-1].startswith("/usr/local/bin/"):
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            if words[-1] == "/usr/local/bin/":
                installed |= {os.path.basename(s) for s in sources}
            else:
                installed.add(os.path.basename(words[-1]))
        if words[:1] == ["USER"]:
            user = words[1]
    for cmd in sorted(commands):
        if cmd.startswith("lion-") and cmd not in installed:
            fail(f"Containerfile: {cmd} (run by the manifests) is not copied to /usr/local/bin")
    if user != "10001:10001":
        fail(f"Containerfile: USER {user}, but the manifests run as 10001:10001")
    say(f"Containerfile: /usr/local/bin has {', '.join(sorted(installed))}; USER {user}")


# --- the ready file -----------------------------------------------------------------------------

def check_ready_file():
    """--ready-file (the workers' readiness probe) on a real start: a stale file is not taken
    for ready, the file appears once the model is open and the loop serves, and goes at
    SIGTERM. No gateway is needed: the worker connects to a port nobody listens on."""
    folder = os.path.join(WORK, "ready")
    os.makedirs(folder)
    ready, log = os.path.join(folder, "ready"), os.path.join(folder, "vision.log")
    with open(ready, "w") as f:
        f.write("stale\n")
    env = {"PATH": os.environ["PATH"], "OMP_WAIT_POLICY": "passive"}
    with open(log, "w") as out:
        p = subprocess.Popen([BINARIES["lion-vision"], "--gateway", "tcp://127.0.0.1:1", "--model", TINY,
                              "--threads", "1", "--replica", "vision-ready-test", "--ready-file", ready],
                             stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline, serving = time.time() + 60, False
        while time.time() < deadline and p.poll() is None:
            with open(log) as f:
                serving = "serving stage vision" in f.read()
            if serving and os.path.exists(ready):
                break
            time.sleep(0.1)
        with open(ready) if os.path.exists(ready) else open(os.devnull) as f:
            content = f.read().strip()
        if not serving or content != "vision-ready-test":
            fail(f"--ready-file: serving={serving}, file holds '{content}' (want the replica id)")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        if rc != 0 or os.path.exists(ready):
            fail(f"--ready-file: after SIGTERM exit {rc}, file {'still there' if os.path.exists(ready) else 'gone'}")
        else:
            say("--ready-file: written with the replica id once serving (a stale one replaced), removed at SIGTERM")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if failures:
            with open(log) as f:
                print(f.read()[-2000:])


def main():
    for name, path in BINARIES.items():
        if not os.path.exists(path):
            fail(f"{name}: {path} is not built")
    if failures:
        return 1
    commands = check_k8s()
    compose_runs = check_compose()
    check_systemd()
    commands |= {os.path.basename(argv[0]) for argv, _, _ in compose_runs.values()}
    check_containerfile(commands)
    check_ready_file()
    # every binary refuses a flag it does not have, with --check-config as with a start
    for name in sorted(SERVICES):
        run(f"{name} --no-such-flag", [name, "--no-such-flag"], {}, Paths(), expect_ok=False,
            want="unknown option '--no-such-flag'")
    print(f"deploy manifests: {len(failures)} failures", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
