#!/usr/bin/env python3
"""Consistency checks of runtimeclass/ and Dockerfile.test that a schema can't do.

Usage: check-deploy-files.py REPO_ROOT

The Kubernetes schema check (field names and types) is kubernetes-validate's;
this checks what ties the files together:
  - the RuntimeClass handlers are exactly the runtimes of both containerd
    config snippets, each with runtime_type io.containerd.<engine>.v1 and
    pod_annotations passing wasm-shim/* through; they are each engine and,
    per sandbox profile runtimeclass/profiles/P.toml, <engine>-<suffix>
    (P without a leading edge-), whose options.ConfigPath is
    /etc/containerd-shim-wasm/profiles/P.toml; each RuntimeClass is named as
    its handler;
  - profiles-configmap.yaml holds exactly runtimeclass/profiles/*.toml, byte
    for byte, in the DaemonSet's namespace, and the DaemonSet mounts it where
    its --profiles-src points;
  - the example Deployment: selector matches its pod labels, its
    runtimeClassName is one of the RuntimeClasses, every probe and the
    Service's targetPort name a declared container port, the wasm-shim/*
    annotations are ones the shim knows, net-listen parses as the shim's
    ADDR:PORTS list and allows every container port, and the memory limit is
    set and above the 8 MiB the shim keeps for the runtime;
  - the DaemonSet: privileged init container, hostPID, the host's / mounted
    where install.sh's --root points, only options install.sh knows, its
    --bin-src and --lib-src where Dockerfile.installer puts the shims and
    libwasmedge; Dockerfile.installer copies the profiles beside install.sh;
  - Dockerfile.test: Debian 12 base, runs scripts/install-deps (the one
    list of packages), scripts/build and scripts/test, copies files that
    exist; Dockerfile.installer copies files that exist, both shims that
    scripts/build produces and libwasmedge staged in target/installer-lib
    (its header shows how, with scripts/lib/libwasmedge.sh's lwe_find, which
    must exist there if that file does), and .dockerignore lets these through.
Prints one line per failed check and exits 1 if any failed.
"""

import fnmatch
import os
import re
import shlex
import sys
import tomllib

import yaml

ROOT = sys.argv[1] if len(sys.argv) > 1 else "."
RC = os.path.join(ROOT, "runtimeclass")
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def docs(name):
    with open(os.path.join(RC, name), encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def of_kind(ds, kind):
    return [d for d in ds if d.get("kind") == kind]


# --- Sandbox profiles, RuntimeClasses and config snippets
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ENGINES = ("wasmtime", "wasmedge")
PROFILE_DIR = "/etc/containerd-shim-wasm/profiles"
PROFILES = os.path.join(RC, "profiles")
profile_files = sorted(f for f in os.listdir(PROFILES) if f.endswith(".toml")) if os.path.isdir(PROFILES) else []
check(profile_files, "runtimeclass/profiles/ holds no *.toml sandbox profile")
profile_text = {}
# handler -> (engine, profile file or None); install.sh's naming rule.
expected = {e: (e, None) for e in ENGINES}
for f in profile_files:
    with open(os.path.join(PROFILES, f), "rb") as fh:
        profile_text[f] = fh.read()
    try:
        tomllib.loads(profile_text[f].decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        check(False, f"profiles/{f} is not valid TOML: {e}")
    stem = f[: -len(".toml")]
    suffix = stem[len("edge-"):] if stem.startswith("edge-") else stem
    for e in ENGINES:
        expected[f"{e}-{suffix}"] = (e, f)

rcs = of_kind(docs("runtimeclass.yaml"), "RuntimeClass")
handlers = {rc["handler"] for rc in rcs}
check(handlers == set(expected), f"RuntimeClass handlers are {sorted(handlers)}, expected {sorted(expected)} (each engine, and one per engine and profile)")
for rc in rcs:
    check(DNS_LABEL.match(rc["handler"]), f"RuntimeClass handler {rc['handler']!r} is not a DNS label")
    check(rc["metadata"]["name"] == rc["handler"], f"RuntimeClass {rc['metadata']['name']!r} has handler {rc['handler']!r}, not its name")
    label = rc["metadata"].get("labels", {}).get("containerd-shim-wasm/profile")
    prof = expected.get(rc["handler"], (None, None))[1]
    check(label == (prof[: -len(".toml")] if prof else None),
          f"RuntimeClass {rc['metadata']['name']!r}: label containerd-shim-wasm/profile is {label!r}, its profile is {prof!r}")

for name, version, plugin in [
    ("containerd-config-v2.toml", 2, "io.containerd.grpc.v1.cri"),
    ("containerd-config-v3.toml", 3, "io.containerd.cri.v1.runtime"),
]:
    with open(os.path.join(RC, name), "rb") as f:
        cfg = tomllib.load(f)
    check(cfg.get("version") == version, f"{name}: version is {cfg.get('version')!r}, expected {version}")
    runtimes = cfg.get("plugins", {}).get(plugin, {}).get("containerd", {}).get("runtimes", {})
    wasm = {k for k, v in runtimes.items() if v.get("runtime_type", "").startswith("io.containerd.was")}
    check(wasm == handlers, f"{name}: Wasm runtimes {sorted(wasm)} differ from the RuntimeClass handlers {sorted(handlers)}")
    for h in handlers:
        rt = runtimes.get(h, {})
        engine, prof = expected.get(h, (h, None))
        check(rt.get("runtime_type") == f"io.containerd.{engine}.v1", f"{name}: runtime {h} has runtime_type {rt.get('runtime_type')!r}")
        check(any(fnmatch.fnmatchcase("wasm-shim/net-listen", p) for p in rt.get("pod_annotations", [])),
              f"{name}: runtime {h} does not pass wasm-shim/* pod annotations")
        got_path = rt.get("options", {}).get("ConfigPath")
        want_path = f"{PROFILE_DIR}/{prof}" if prof else None
        check(got_path == want_path, f"{name}: runtime {h} has options.ConfigPath {got_path!r}, expected {want_path!r}")
    if version == 2:
        check(runtimes.get("runc", {}).get("runtime_type") == "io.containerd.runc.v2",
              f"{name}: containerd 1.x needs runc defined once the config names a runtime")
        check("sandbox_image" in cfg["plugins"][plugin], f"{name}: no sandbox_image")
    else:
        pinned = cfg.get("plugins", {}).get("io.containerd.cri.v1.images", {}).get("pinned_images", {})
        check("sandbox" in pinned, f"{name}: no io.containerd.cri.v1.images pinned_images.sandbox")

# --- The example Deployment and Service
KNOWN_ANNOTATIONS = {"wasm-shim/time-limit-ms", "wasm-shim/net-connect", "wasm-shim/net-listen", "wasm-shim/net-lookup", "wasm-shim/profile"}
UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity_bytes(q):
    m = re.fullmatch(r"(\d+)(|k|M|G|Ki|Mi|Gi)", str(q))
    return int(m.group(1)) * UNITS[m.group(2)] if m else None


def port_allowed(allowlist, port):
    """Does an ADDR:PORTS,... list (README, Annotations) allow binding `port`?"""
    ok = False
    for entry in allowlist.split(","):
        entry = entry.strip()
        addr, sep, ports = entry.rpartition(":")
        if not check(sep and addr and ports, f"net-listen entry {entry!r} is not ADDR:PORTS"):
            continue
        check(addr == "*" or re.fullmatch(r"[0-9A-Za-z.\-\[\]:/]+", addr), f"net-listen address {addr!r} is malformed")
        if ports == "*":
            ok = True
        elif re.fullmatch(r"\d+", ports):
            ok |= int(ports) == port
        elif re.fullmatch(r"\d+-\d+", ports):
            lo, hi = map(int, ports.split("-"))
            check(lo <= hi, f"net-listen range {ports} is empty")
            ok |= lo <= port <= hi
        else:
            check(False, f"net-listen ports {ports!r} are malformed")
    return ok


example = docs("example-http.yaml")
deps, svcs = of_kind(example, "Deployment"), of_kind(example, "Service")
check(len(deps) == 1 and len(svcs) == 1, "example-http.yaml: expected one Deployment and one Service")
for dep in deps:
    tmpl = dep["spec"]["template"]
    labels = tmpl["metadata"].get("labels", {})
    sel = dep["spec"]["selector"]["matchLabels"]
    check(sel.items() <= labels.items(), "Deployment selector does not match its pod labels")
    pod = tmpl["spec"]
    check(pod.get("runtimeClassName") in {rc["metadata"]["name"] for rc in rcs},
          f"runtimeClassName {pod.get('runtimeClassName')!r} is not one of the RuntimeClasses")
    ann = tmpl["metadata"].get("annotations", {})
    for k in ann:
        if k.startswith("wasm-shim/"):
            check(k in KNOWN_ANNOTATIONS, f"annotation {k} is unknown to the shim (it refuses the container)")
    listen = ann.get("wasm-shim/net-listen", "")
    check(listen, "the example pod has no wasm-shim/net-listen: its server could not listen")
    names, numbers = {}, set()
    for c in pod["containers"]:
        for p in c.get("ports", []):
            numbers.add(p["containerPort"])
            if "name" in p:
                names[p["name"]] = p["containerPort"]
            check(listen and port_allowed(listen, p["containerPort"]),
                  f"net-listen {listen!r} does not allow container port {p['containerPort']}")
        for probe in ("readinessProbe", "livenessProbe"):
            get = c.get(probe, {}).get("httpGet")
            if check(get, f"container {c['name']}: no {probe} httpGet"):
                port = get["port"]
                check(port in names or port in numbers, f"{probe} port {port!r} is not a declared container port")
        mem = c.get("resources", {}).get("limits", {}).get("memory")
        b = quantity_bytes(mem) if mem is not None else None
        check(b is not None and b > 8 * 2**20, f"container {c['name']}: memory limit {mem!r} missing or not above 8 MiB")
    for svc in svcs:
        check(svc["spec"]["selector"].items() <= labels.items(), "Service selector does not select the Deployment's pods")
        for p in svc["spec"]["ports"]:
            t = p.get("targetPort", p["port"])
            check(t in names or t in numbers, f"Service targetPort {t!r} is not a declared container port")

# --- The profiles' ConfigMap: the files, byte for byte
cms = of_kind(docs("profiles-configmap.yaml"), "ConfigMap")
check(len(cms) == 1, "profiles-configmap.yaml: expected one ConfigMap")
for cm in cms:
    data = cm.get("data", {})
    check(set(data) == set(profile_files),
          f"ConfigMap {cm['metadata']['name']}: keys {sorted(data)} differ from runtimeclass/profiles/*.toml {profile_files}")
    for k in sorted(set(data) & set(profile_files)):
        check(data[k].encode("utf-8") == profile_text[k],
              f"ConfigMap {cm['metadata']['name']}: {k} differs from runtimeclass/profiles/{k}")

# --- The DaemonSet
INSTALL_OPTS = {"--root", "--bin-src", "--bin-dir", "--lib-src", "--runtimes", "--profiles-src", "--config", "--config-version", "--containerd", "--restart-cmd"}
with open(os.path.join(RC, "install.sh"), encoding="utf-8") as f:
    install_sh = f.read()
for opt in INSTALL_OPTS | {"--no-restart", "--no-profiles"}:
    check(opt in install_sh, f"install.sh does not know {opt}")
installer_opts = []
for ds in of_kind(docs("daemonset.yaml"), "DaemonSet"):
    pod = ds["spec"]["template"]["spec"]
    check(pod.get("hostPID") is True, "DaemonSet: hostPID is needed for nsenter into PID 1")
    check(ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items(),
          "DaemonSet selector does not match its pod labels")
    host_vols = {v["name"] for v in pod.get("volumes", []) if v.get("hostPath", {}).get("path") == "/"}
    inits = pod.get("initContainers", [])
    check(len(inits) == 1, "DaemonSet: expected one init container (the installer)")
    for c in inits:
        check(c.get("securityContext", {}).get("privileged") is True, "installer container is not privileged")
        args = c.get("command", []) + c.get("args", [])
        check(args and args[0].endswith("install.sh"), "installer container does not run install.sh")
        opts = dict(zip(args[1::2], args[2::2]))
        installer_opts.append(opts)
        check(set(opts) <= INSTALL_OPTS, f"installer options {sorted(set(opts) - INSTALL_OPTS)} unknown to install.sh")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in host_vols}
        check(opts.get("--root") in mounts, f"--root {opts.get('--root')!r} is not where the host's / is mounted ({sorted(mounts)})")
        cm_vols = {v["name"]: v["configMap"].get("name") for v in pod.get("volumes", []) if "configMap" in v}
        cm_mounts = {m["mountPath"].rstrip("/"): cm_vols[m["name"]] for m in c.get("volumeMounts", []) if m["name"] in cm_vols}
        src = opts.get("--profiles-src", "").rstrip("/")
        for cm in cms:
            check(cm["metadata"].get("namespace") == ds["metadata"].get("namespace"),
                  f"ConfigMap {cm['metadata']['name']} is in namespace {cm['metadata'].get('namespace')!r}, the DaemonSet in {ds['metadata'].get('namespace')!r}")
            check(cm_mounts.get(src) == cm["metadata"]["name"],
                  f"DaemonSet --profiles-src {opts.get('--profiles-src')!r} is not where ConfigMap {cm['metadata']['name']} is mounted ({cm_mounts})")

# --- Dockerfiles
def dockerfile(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = re.sub(r"\\\n", " ", f.read())
    return [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]


lines = dockerfile("Dockerfile.test")
check(lines and re.fullmatch(r"FROM debian:(12|bookworm)(-slim)?", lines[0]), "Dockerfile.test: not FROM debian:12")
runs = [l for l in lines if l.startswith("RUN ")]
# The packages come from scripts/install-deps itself, so the two cannot drift apart.
for script in ("scripts/install-deps", "scripts/build"):
    check(any(script in l for l in runs), f"Dockerfile.test does not RUN {script}")
check(any(l.startswith(("CMD ", "ENTRYPOINT ")) and "scripts/test" in l for l in lines), "Dockerfile.test does not run scripts/test")
for l in lines:
    if l.startswith("COPY "):
        for s in shlex.split(l[5:])[:-1]:
            check(os.path.exists(os.path.join(ROOT, s)), f"Dockerfile.test copies {s}, which does not exist")
with open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8") as f:
    ignored = [l.strip() for l in f if l.strip() and not l.startswith("#")]
check("target" in ignored, ".dockerignore does not keep target/ out of the build context")

STAGED_LIB = "target/installer-lib"
with open(os.path.join(ROOT, "runtimeclass/Dockerfile.installer"), encoding="utf-8") as f:
    installer_text = f.read()
copied = {}  # source -> destination
for l in dockerfile("runtimeclass/Dockerfile.installer"):
    if l.startswith("COPY "):
        words = shlex.split(l[5:])
        check(not any(w.startswith("--") for w in words), f"Dockerfile.installer: COPY flags are not expected: {l}")
        for s in words[:-1]:
            copied[s.rstrip("/")] = words[-1]
            built = s.startswith("target/release/containerd-shim-")
            staged = s.rstrip("/") == STAGED_LIB
            check(built or staged or os.path.exists(os.path.join(ROOT, s)), f"Dockerfile.installer copies {s}, which does not exist")
            if built or staged:
                check(f"!{s.rstrip('/')}" in ignored, f".dockerignore keeps {s} out of the build context")
            if built:
                check("containerd-shim-$shim-v1" in open(os.path.join(ROOT, "scripts/build"), encoding="utf-8").read(),
                      f"Dockerfile.installer copies {s}, which scripts/build does not produce")
shim_dests = set()
for shim in ("wasmtime", "wasmedge"):
    s = f"target/release/containerd-shim-{shim}-v1"
    if check(s in copied, f"Dockerfile.installer does not copy {s}"):
        check(copied[s].endswith("/"), f"Dockerfile.installer copies {s} to {copied[s]}, not into a folder")
        shim_dests.add(copied[s].rstrip("/"))
check(len(shim_dests) <= 1, f"Dockerfile.installer puts the shims in different folders: {sorted(shim_dests)}")
lib_dest = copied.get(STAGED_LIB, "").rstrip("/")
install_dest = copied.get("runtimeclass/install.sh", "")
check(copied.get("runtimeclass/profiles", "").rstrip("/") == os.path.join(os.path.dirname(install_dest), "profiles"),
      f"Dockerfile.installer does not copy runtimeclass/profiles/ beside install.sh ({install_dest!r}), its default --profiles-src")
check(lib_dest, f"Dockerfile.installer does not copy libwasmedge ({STAGED_LIB}/)")
# The staging recipe in its header: from the libwasmedge scripts/build uses, links kept.
check(re.search(r"lwe_find", installer_text) and re.search(rf"cp -P [^\n]*libwasmedge\.so\.0\* {re.escape(STAGED_LIB)}/", installer_text),
      f"Dockerfile.installer's header does not show how {STAGED_LIB} is staged (lwe_find, cp -P libwasmedge.so.0*)")
lwe_sh = os.path.join(ROOT, "scripts/lib/libwasmedge.sh")
if os.path.exists(lwe_sh):
    with open(lwe_sh, encoding="utf-8") as f:
        lwe_text = f.read()
    for fn in ("lwe_find", "lwe_libdir"):
        check(re.search(rf"^{fn}\(\)", lwe_text, re.M), f"Dockerfile.installer's header calls {fn}, which scripts/lib/libwasmedge.sh does not define")
for opts in installer_opts:
    check(opts.get("--bin-src", "").rstrip("/") in shim_dests,
          f"DaemonSet --bin-src {opts.get('--bin-src')!r} is not where Dockerfile.installer puts the shims ({sorted(shim_dests)})")
    check(opts.get("--lib-src", "").rstrip("/") == lib_dest,
          f"DaemonSet --lib-src {opts.get('--lib-src')!r} is not where Dockerfile.installer puts libwasmedge ({lib_dest!r})")

for e in errors:
    print(f"FAIL: {e}")
sys.exit(1 if errors else 0)
