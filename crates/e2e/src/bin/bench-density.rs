//! Density benchmark driver (run by `scripts/bench-density`, which starts the private
//! containerd with CRI and passes it in through the environment, as for the CRI suite).
//!
//! For each N of `DENSITY_N` and each kind of `DENSITY_KINDS` (a Wasm guest that sleeps
//! under the `wasmedge` or `wasmtime` handler, busybox `sleep` under `runc`) it creates N
//! pods through CRI, `DENSITY_PARALLEL` at a time, as kubelet would (RunPodSandbox with a
//! cgroup parent per pod, CreateContainer, StartContainer), measures with all N running
//! (PSS of every process the pods added, by role; the pod cgroups' kernel and total memory;
//! containerd's growth; MemAvailable), stops and removes them the same way, and checks that
//! nothing is left (processes, mounts, network namespaces, veths, cgroups, IP leases, shim
//! sockets, CRI sandboxes).
//!
//! Environment (besides what `ctd_start` exports: `CONTAINERD_ADDRESS`, `CTD_DIR`,
//! `CTD_PID`, `CTD_CGROUP_PARENT`, `CTD_CNI_NETWORK`, `CTD_CNI_BRIDGE`, `CTD_CNI_DATA_DIR`):
//!
//! - `DENSITY_N` (default `10 100 1000`), `DENSITY_KINDS` (default `wasmedge wasmtime runc`)
//! - `DENSITY_PARALLEL` (default 4): CRI calls in flight, one worker thread each
//! - `DENSITY_SETTLE_MS` (default 2000): pause after the last pod started and between rounds
//! - `DENSITY_MIN_AVAILABLE_MB` (default 1024): no new pod once MemAvailable is below this;
//!   the round then reports how many pods it reached
//! - `DENSITY_OUT`: folder for `round-<N>-<kind>.json`, `all.json` and `table.md`
//!
//! It prints one line per round on stderr and the table (Markdown) on stdout.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use e2e::cri::{self, cgroup_dirs, container_config, cri_image, pod_config, remove_cgroup, Cri};
use serde_json::{json, Value};

const KINDS: [&str; 3] = ["wasmedge", "wasmtime", "runc"];

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn env_num(key: &str, default: u64) -> u64 {
    let v = env_or(key, &default.to_string());
    v.trim()
        .parse()
        .unwrap_or_else(|_| die(&format!("{key} must be a whole number (got {v:?})")))
}

fn need_env(key: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            die(&format!(
                "{key} is not set: run this through scripts/bench-density (or after \
                 `CTD_ENABLE_CRI=1 ctd_start` of scripts/lib/containerd.sh)"
            ))
        })
}

fn die(msg: &str) -> ! {
    eprintln!("[bench-density] error: {msg}");
    std::process::exit(1)
}

fn say(msg: &str) {
    eprintln!("[bench-density] {msg}");
}

struct Settings {
    address: String,
    ctd_dir: PathBuf,
    ctd_pid: u32,
    cgroup_parent: String,
    network: String,
    bridge: String,
    ipam_dir: PathBuf,
    par: usize,
    settle: Duration,
    min_avail_kib: u64,
}

/// One kind of pod: its handler and its sleeping container.
struct Kind {
    name: &'static str,
    handler: &'static str,
    image: String,
    command: Vec<&'static str>,
    args: Vec<&'static str>,
}

fn kind(name: &str) -> Kind {
    match name {
        // The probe guest (a WASI preview 1 module, runs under both engines): `sleep MS`
        // sleeps in the host (poll_oneoff), no CPU used, then prints `slept`.
        "wasmedge" | "wasmtime" => Kind {
            name: if name == "wasmedge" {
                "wasmedge"
            } else {
                "wasmtime"
            },
            handler: if name == "wasmedge" {
                "wasmedge"
            } else {
                "wasmtime"
            },
            image: cri_image("probe"),
            command: vec!["/probe.wasm"],
            args: vec!["sleep", "3600000"],
        },
        "runc" => Kind {
            name: "runc",
            handler: "runc",
            image: cri_image("busybox"),
            command: vec!["sleep"],
            args: vec!["3600"],
        },
        other => die(&format!(
            "unknown kind {other:?} in DENSITY_KINDS ({})",
            KINDS.join(", ")
        )),
    }
}

// ---- /proc ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Proc {
    ppid: u32,
    start: u64,
    cmdline: Vec<String>,
    exe: String,
    cgroup: String,
}

impl Proc {
    fn argv0_base(&self) -> &str {
        self.cmdline
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }
    fn exe_base(&self) -> &str {
        self.exe.rsplit('/').next().unwrap_or("")
    }
    fn joined(&self) -> String {
        self.cmdline.join(" ")
    }
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state ppid ... starttime is the 20th field (index 19).
    let ppid = f.get(1)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    Some(Proc {
        ppid,
        start,
        cmdline,
        exe,
        cgroup,
    })
}

fn all_procs() -> HashMap<u32, Proc> {
    let me = std::process::id();
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Some(p) = read_proc(pid) {
            out.insert(pid, p);
        }
    }
    out
}

/// Fields of /proc/PID/smaps_rollup in KiB (Pss, Pss_Anon, Pss_File, Rss, ...).
fn smaps(pid: u32) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let v = v.split_whitespace().next()?.parse::<f64>().ok()?;
            Some((k.trim().to_string(), v))
        })
        .collect()
}

fn pss_kib(pid: u32) -> f64 {
    smaps(pid).get("Pss").copied().unwrap_or(0.0)
}

fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (open fds, of which inotify instances) of `pid`.
fn fds(pid: u32) -> (usize, usize) {
    let mut n = 0;
    let mut inotify = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        n += 1;
        if std::fs::read_link(e.path())
            .map(|t| t.to_string_lossy().contains("inotify"))
            .unwrap_or(false)
        {
            inotify += 1;
        }
    }
    (n, inotify)
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The shims of our containerd (their command line names its socket) and every descendant
/// of them, plus every process in a cgroup under our cgroup parent: what the pods run.
fn related(procs: &HashMap<u32, Proc>, s: &Settings) -> (HashSet<u32>, HashSet<u32>) {
    let shims: HashSet<u32> = procs
        .iter()
        .filter(|(_, p)| {
            p.exe_base().starts_with("containerd-shim-") && p.joined().contains(&s.address)
        })
        .map(|(pid, _)| *pid)
        .collect();
    let needle = format!("{}/", s.cgroup_parent);
    let mut set: HashSet<u32> = procs
        .iter()
        .filter(|(_, p)| p.cgroup.contains(&needle))
        .map(|(pid, _)| *pid)
        .collect();
    set.extend(shims.iter().copied());
    // Descendants (a fixed point; process trees here are shallow).
    loop {
        let before = set.len();
        for (pid, p) in procs {
            if !set.contains(pid) && (shims.contains(&p.ppid) || set.contains(&p.ppid)) {
                set.insert(*pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    (set, shims)
}

/// A process's role in a pod.
fn role(pid: u32, procs: &HashMap<u32, Proc>, shims: &HashSet<u32>) -> &'static str {
    let p = &procs[&pid];
    if shims.contains(&pid) && !shims.contains(&p.ppid) {
        return "shim";
    }
    let under_shim = {
        let mut q = p.ppid;
        let mut found = false;
        for _ in 0..64 {
            if shims.contains(&q) {
                found = true;
                break;
            }
            match procs.get(&q) {
                Some(pp) if q > 1 => q = pp.ppid,
                _ => break,
            }
        }
        found
    };
    let args = p.cmdline.iter().skip(1).map(String::as_str);
    let args: Vec<&str> = args.collect();
    // The zygote names itself `wasm-zygote`; the instances it forks (whose command line is
    // the zygote's) `wasm:<container id>`.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if under_shim && comm.trim_end() == "wasm-zygote" {
        "zygote"
    } else if under_shim && comm.starts_with("wasm:") {
        "container"
    } else if p.argv0_base() == "pause" || p.exe_base() == "pause" {
        "pause"
    } else if p.argv0_base() == "runc" || p.exe_base() == "runc" {
        "runc"
    } else if p.argv0_base() == "sleep" {
        "sleep"
    } else if p.exe_base().starts_with("containerd-shim-") && args.first() == Some(&"native") {
        "native-helper"
    } else if under_shim {
        "container"
    } else {
        "other"
    }
}

// ---- leftovers -------------------------------------------------------------------------

fn mounts_under(prefixes: &[PathBuf]) -> HashSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| {
            prefixes.iter().any(|p| {
                let p = p.to_string_lossy();
                m == &*p || m.starts_with(&format!("{p}/"))
            })
        })
        .collect()
}

fn dir_names(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn leases(s: &Settings) -> HashSet<String> {
    dir_names(&s.ipam_dir.join(&s.network))
        .into_iter()
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect()
}

fn veths(s: &Settings) -> usize {
    dir_names(&Path::new("/sys/class/net").join(&s.bridge).join("brif")).len()
}

fn cgroup_children(path: &str) -> Vec<PathBuf> {
    cgroup_dirs(path)
        .into_iter()
        .flat_map(|d| {
            std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
        })
        .collect()
}

/// Kernel memory and total memory (bytes) charged to cgroup `path` (None if not found).
fn cgroup_mem(path: &str) -> Option<(u64, u64)> {
    let rel = path.trim_start_matches('/');
    let read = |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(rel);
        let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
        let field = |k: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let kernel = field("kernel").unwrap_or_else(|| {
            [
                "kernel_stack",
                "pagetables",
                "sec_pagetables",
                "percpu",
                "sock",
                "slab",
            ]
            .iter()
            .filter_map(|k| field(k))
            .sum()
        });
        Some((kernel, read(dir.join("memory.current"))?))
    } else {
        let dir = root.join("memory").join(rel);
        Some((
            read(dir.join("memory.kmem.usage_in_bytes"))?,
            read(dir.join("memory.usage_in_bytes"))?,
        ))
    }
}

// ---- statistics ------------------------------------------------------------------------

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Nearest rank: the ceil(0.99 n)-th smallest.
fn p99(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let r = ((0.99 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[r - 1])
}

fn stats(v: &[f64]) -> Value {
    json!({ "n": v.len(), "median": median(v), "p99": p99(v),
            "max": v.iter().copied().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))) })
}

// ---- one round -------------------------------------------------------------------------

#[derive(Default, Clone)]
struct PodRec {
    name: String,
    sandbox: String,
    container: String,
    cgroup_parent: String,
    run_ms: f64,
    create_ms: f64,
    start_ms: f64,
    teardown_ms: f64,
    error: Option<String>,
}

/// The median of each tenth of `v` (in its order), rounded to 0.1.
fn tenths(v: &[f64]) -> Vec<f64> {
    if v.len() < 10 {
        return Vec::new();
    }
    (0..10)
        .map(|t| {
            let part = &v[t * v.len() / 10..(t + 1) * v.len() / 10];
            (median(part).unwrap_or(0.0) * 10.0).round() / 10.0
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// RunPodSandbox, CreateContainer, StartContainer of one pod, each timed; on failure the
/// record keeps what was created (for the teardown) and the error.
fn create_pod(cri: &Cri, k: &Kind, tag: &str) -> PodRec {
    let config = pod_config(&format!("density-{tag}"));
    let mut rec = PodRec {
        name: config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        cgroup_parent: config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let t = Instant::now();
    match cri.run_pod(&config, k.handler) {
        Ok(id) => rec.sandbox = id,
        Err(e) => {
            rec.error = Some(e.to_string());
            return rec;
        }
    }
    rec.run_ms = ms(t.elapsed());
    let c = container_config("sleeper", &k.image, &k.command, &k.args);
    let t = Instant::now();
    match cri.create_container(&rec.sandbox, &config, &c) {
        Ok(id) => rec.container = id,
        Err(e) => {
            rec.error = Some(e.to_string());
            return rec;
        }
    }
    rec.create_ms = ms(t.elapsed());
    let t = Instant::now();
    if let Err(e) = cri.start_container(&rec.container) {
        rec.error = Some(e.to_string());
        return rec;
    }
    rec.start_ms = ms(t.elapsed());
    rec
}

/// StopPodSandbox, RemovePodSandbox, then (as kubelet does) the pod's cgroup parent. Returns
/// the container cgroups the runtime left under the pod's cgroup (removed here too).
fn remove_pod(cri: &Cri, rec: &mut PodRec) -> Vec<String> {
    let t = Instant::now();
    let mut errors = Vec::new();
    if !rec.sandbox.is_empty() {
        if let Err(e) = cri.stop_pod(&rec.sandbox) {
            errors.push(e.to_string());
        }
        if let Err(e) = cri.remove_pod(&rec.sandbox) {
            errors.push(e.to_string());
        }
    }
    let left: Vec<String> = cgroup_children(&rec.cgroup_parent)
        .into_iter()
        .map(|p| p.display().to_string())
        .collect();
    if let Err(e) = remove_cgroup(&rec.cgroup_parent) {
        errors.push(e);
    }
    rec.teardown_ms = ms(t.elapsed());
    if !errors.is_empty() {
        let prev = rec
            .error
            .take()
            .map(|e| format!("{e}; "))
            .unwrap_or_default();
        rec.error = Some(format!("{prev}teardown: {}", errors.join("; ")));
    }
    left
}

/// Runs `f(cri, i)` for i in 0..n on `par` worker threads (each with its own connection),
/// in order of i as workers free up, until `stop` is set.
fn in_parallel<T: Send>(
    s: &Settings,
    n: usize,
    stop: &AtomicBool,
    f: impl Fn(&Cri, usize) -> T + Sync,
) -> Vec<(usize, T)> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|scope| {
        for _ in 0..s.par.min(n.max(1)) {
            scope.spawn(|| {
                let cri =
                    Cri::connect_to(Path::new(&s.address)).unwrap_or_else(|e| die(&format!("{e}")));
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let r = f(&cri, i);
                    out.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|(i, _)| *i);
    v
}

/// Pids of the processes the pods run, with start times (to tell a reused pid).
fn snapshot_ids(procs: &HashMap<u32, Proc>) -> HashSet<(u32, u64)> {
    procs.iter().map(|(pid, p)| (*pid, p.start)).collect()
}

fn round(s: &Settings, n: usize, k: &Kind) -> Value {
    say(&format!("round N={n} {}: warm-up pod", k.name));
    {
        let cri = Cri::connect_to(Path::new(&s.address)).unwrap_or_else(|e| die(&format!("{e}")));
        let mut rec = create_pod(&cri, k, &format!("{}-warmup", k.name));
        if let Some(e) = &rec.error {
            die(&format!("the warm-up pod of {} failed: {e}", k.name));
        }
        remove_pod(&cri, &mut rec);
    }
    std::thread::sleep(s.settle);
    // A shim that serves many pods outlives the warm-up pod a little: wait for it to exit,
    // so that the round's pods pay for the whole of the shim they start.
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !related(&all_procs(), s).1.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
    }

    // ---- before
    let procs0 = all_procs();
    let ids0 = snapshot_ids(&procs0);
    let (rel0, _) = related(&procs0, s);
    let pss0: HashMap<u32, f64> = rel0.iter().map(|p| (*p, pss_kib(*p))).collect();
    let ctd_pss0 = pss_kib(s.ctd_pid);
    let ctd_fds0 = fds(s.ctd_pid);
    let ctd_threads0 = status_field(s.ctd_pid, "Threads:");
    let avail0 = meminfo_kib("MemAvailable");
    let mount_roots = [
        s.ctd_dir.join("root"),
        s.ctd_dir.join("state"),
        PathBuf::from("/run/netns"),
        PathBuf::from("/var/run/netns"),
    ];
    let mounts0 = mounts_under(&mount_roots);
    let netns0 = dir_names(Path::new("/run/netns"));
    let leases0 = leases(s);
    let veths0 = veths(s);

    // ---- create
    say(&format!(
        "round N={n} {}: creating {n} pods, {} at a time",
        k.name, s.par
    ));
    let stop = AtomicBool::new(false);
    let errors = AtomicUsize::new(0);
    let low_memory = AtomicBool::new(false);
    let t0 = Instant::now();
    let created = in_parallel(s, n, &stop, |cri, i| {
        if meminfo_kib("MemAvailable") < s.min_avail_kib {
            low_memory.store(true, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
            return None;
        }
        let rec = create_pod(cri, k, &format!("{}-{n}-{i}", k.name));
        if let Some(e) = &rec.error {
            say(&format!("pod {i}: {e}"));
            if errors.fetch_add(1, Ordering::SeqCst) + 1 >= 10 {
                stop.store(true, Ordering::SeqCst);
            }
        }
        Some(rec)
    });
    let create_wall = t0.elapsed();
    let mut pods: Vec<PodRec> = created.into_iter().filter_map(|(_, r)| r).collect();
    let ok: Vec<PodRec> = pods.iter().filter(|p| p.error.is_none()).cloned().collect();
    let pods_per_s = ok.len() as f64 / create_wall.as_secs_f64();
    say(&format!(
        "round N={n} {}: {} pods running after {:.1}s ({pods_per_s:.1} pods/s), {} failed{}",
        k.name,
        ok.len(),
        create_wall.as_secs_f64(),
        pods.len() - ok.len(),
        if low_memory.load(Ordering::SeqCst) {
            "; stopped: MemAvailable below DENSITY_MIN_AVAILABLE_MB"
        } else {
            ""
        }
    ));
    std::thread::sleep(s.settle);

    // ---- measure with all running
    let running = {
        let cri = Cri::connect_to(Path::new(&s.address)).unwrap_or_else(|e| die(&format!("{e}")));
        let ours: HashSet<&str> = ok.iter().map(|p| p.container.as_str()).collect();
        cri.list_containers(None)
            .map(|v| {
                v.into_iter()
                    .filter(|(id, _, st)| {
                        ours.contains(id.as_str()) && *st == cri::ContainerState::ContainerRunning
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let procs1 = all_procs();
    let (rel1, shims1) = related(&procs1, s);
    let mut by_role: HashMap<&str, (usize, f64)> = HashMap::new();
    let (mut anon, mut file, mut threads, mut proc_fds, mut inotify) = (0.0, 0.0, 0u64, 0, 0);
    let mut others = Vec::new();
    for pid in &rel1 {
        let p = &procs1[pid];
        let r = role(*pid, &procs1, &shims1);
        let m = smaps(*pid);
        let pss = m.get("Pss").copied().unwrap_or(0.0);
        // A process older than the round (a shim per node, say) counts with its growth.
        let (pss, a, f) = if ids0.contains(&(*pid, p.start)) {
            (pss - pss0.get(pid).copied().unwrap_or(0.0), 0.0, 0.0)
        } else {
            (
                pss,
                m.get("Pss_Anon").copied().unwrap_or(0.0),
                m.get("Pss_File").copied().unwrap_or(0.0),
            )
        };
        anon += a;
        file += f;
        threads += status_field(*pid, "Threads:");
        let (nf, ni) = fds(*pid);
        proc_fds += nf;
        inotify += ni;
        let e = by_role.entry(r).or_default();
        e.0 += 1;
        e.1 += pss;
        if r == "other" && others.len() < 5 {
            others.push(p.joined());
        }
    }
    let ctd_pss1 = pss_kib(s.ctd_pid);
    let ctd_fds1 = fds(s.ctd_pid);
    let ctd_threads1 = status_field(s.ctd_pid, "Threads:");
    let avail1 = meminfo_kib("MemAvailable");
    let (mut kmem, mut usage, mut cg_found) = (0u64, 0u64, 0usize);
    for p in &ok {
        if let Some((km, u)) = cgroup_mem(&p.cgroup_parent) {
            kmem += km;
            usage += u;
            cg_found += 1;
        }
    }
    let npods = ok.len().max(1) as f64;
    let total_pss: f64 = by_role.values().map(|(_, p)| p).sum();
    let mib = |kib: f64| kib / 1024.0;

    // ---- teardown
    say(&format!("round N={n} {}: removing the pods", k.name));
    let never = AtomicBool::new(false);
    let t1 = Instant::now();
    let to_remove = pods.clone();
    let removed = in_parallel(s, to_remove.len(), &never, |cri, i| {
        let mut rec = to_remove[i].clone();
        let left = remove_pod(cri, &mut rec);
        (rec, left)
    });
    let teardown_wall = t1.elapsed();
    let mut runtime_cgroups_left = Vec::new();
    let mut teardown_errors = Vec::new();
    for (i, (rec, left)) in removed {
        if let Some(e) = rec.error.as_ref().filter(|e| e.contains("teardown:")) {
            teardown_errors.push(format!("{}: {e}", rec.name));
        }
        pods[i] = rec;
        runtime_cgroups_left.extend(left);
    }

    // ---- leftovers (processes may take a moment to go)
    let deadline = Instant::now() + Duration::from_secs(10);
    let left_procs = loop {
        let procs = all_procs();
        let (rel, _) = related(&procs, s);
        let left: Vec<String> = rel
            .iter()
            .filter(|pid| !ids0.contains(&(**pid, procs[pid].start)))
            .map(|pid| format!("{pid} {}", procs[pid].joined()))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let avail2 = meminfo_kib("MemAvailable");
    let new_mounts: Vec<String> = mounts_under(&mount_roots)
        .difference(&mounts0)
        .cloned()
        .collect();
    let new_netns: Vec<String> = dir_names(Path::new("/run/netns"))
        .difference(&netns0)
        .cloned()
        .collect();
    let new_leases: Vec<String> = leases(s).difference(&leases0).cloned().collect();
    let veths2 = veths(s);
    let pod_cgroups_left: Vec<String> = pods
        .iter()
        .flat_map(|p| cgroup_dirs(&p.cgroup_parent))
        .map(|p| p.display().to_string())
        .collect();
    let (cri_left, sockets_left) = {
        let cri = Cri::connect_to(Path::new(&s.address)).unwrap_or_else(|e| die(&format!("{e}")));
        let listed: HashSet<String> = cri.list_pods().unwrap_or_default().into_iter().collect();
        let cri_left: Vec<&str> = pods
            .iter()
            .filter(|p| listed.contains(&p.sandbox))
            .map(|p| p.sandbox.as_str())
            .collect();
        // Per pod (runc's shims), and the Wasm shim's one per node (`<engine>-pods`).
        let node_shim = format!("{}-pods", k.handler);
        let sockets: Vec<String> = pods
            .iter()
            .flat_map(|p| [p.sandbox.as_str(), p.container.as_str()])
            .chain([node_shim.as_str()])
            .filter(|id| !id.is_empty())
            .map(|id| e2e::shim_socket_path(cri::CRI_NAMESPACE, id))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        (cri_left.len(), sockets)
    };
    let check = |what: &str, left: usize, sample: &[String]| -> Value {
        json!({ "check": what, "left": left, "ok": left == 0,
                "sample": sample.iter().take(5).collect::<Vec<_>>() })
    };
    let veths_left = veths2.saturating_sub(veths0);
    let checks = vec![
        check("processes", left_procs.len(), &left_procs),
        check("mounts", new_mounts.len(), &new_mounts),
        check("netns", new_netns.len(), &new_netns),
        check("veths", veths_left, &[]),
        check("pod cgroups", pod_cgroups_left.len(), &pod_cgroups_left),
        check(
            "container cgroups left by the runtime",
            runtime_cgroups_left.len(),
            &runtime_cgroups_left,
        ),
        check("IP leases", new_leases.len(), &new_leases),
        check("shim sockets", sockets_left.len(), &sockets_left),
        check("CRI sandboxes", cri_left, &[]),
        check("teardown errors", teardown_errors.len(), &teardown_errors),
    ];
    let all_ok = checks.iter().all(|c| c["ok"] == json!(true));
    say(&format!(
        "round N={n} {}: PSS/pod {:.1} MB, removed in {:.1}s, leftovers: {}",
        k.name,
        mib(total_pss) / npods,
        teardown_wall.as_secs_f64(),
        if all_ok {
            "none".to_string()
        } else {
            checks
                .iter()
                .filter(|c| c["ok"] != json!(true))
                .map(|c| format!("{} {}", c["check"].as_str().unwrap_or(""), c["left"]))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));

    let col = |f: fn(&PodRec) -> f64| -> Vec<f64> {
        pods.iter().filter(|p| p.error.is_none()).map(f).collect()
    };
    let roles: serde_json::Map<String, Value> = by_role
        .iter()
        .map(|(r, (count, pss))| {
            (
                r.to_string(),
                json!({ "processes": count, "pss_mib": mib(*pss), "pss_mib_per_pod": mib(*pss) / npods }),
            )
        })
        .collect();
    json!({
        "n": n,
        "kind": k.name,
        "handler": k.handler,
        "image": k.image,
        "command": k.command.iter().chain(k.args.iter()).collect::<Vec<_>>(),
        "parallel": s.par,
        "pods_requested": n,
        "pods_running": ok.len(),
        "containers_running_at_measure": running,
        "pods_failed": pods.len() - ok.len(),
        "stopped_low_memory": low_memory.load(Ordering::SeqCst),
        "errors": pods.iter().filter_map(|p| p.error.clone()).take(10).collect::<Vec<_>>(),
        "create_wall_s": create_wall.as_secs_f64(),
        "pods_per_s": pods_per_s,
        "teardown_wall_s": teardown_wall.as_secs_f64(),
        "latency_ms": {
            "run_pod_sandbox": stats(&col(|p| p.run_ms)),
            "create_container": stats(&col(|p| p.create_ms)),
            "start_container": stats(&col(|p| p.start_ms)),
            "total": stats(&col(|p| p.run_ms + p.create_ms + p.start_ms)),
            "teardown": stats(&col(|p| p.teardown_ms)),
            // Median of each tenth of the pods in creation order: whether a call slows down
            // as the node fills.
            "total_median_by_tenth": tenths(&col(|p| p.run_ms + p.create_ms + p.start_ms)),
            "start_container_median_by_tenth": tenths(&col(|p| p.start_ms)),
        },
        "pss": {
            "total_mib": mib(total_pss),
            "per_pod_mib": mib(total_pss) / npods,
            "anon_mib_per_pod": mib(anon) / npods,
            "file_mib_per_pod": mib(file) / npods,
            "processes": rel1.len(),
            "threads": threads,
            "fds": proc_fds,
            "inotify_instances": inotify,
            "roles": roles,
            "other_sample": others,
        },
        "containerd": {
            "pid": s.ctd_pid,
            "pss_mib_before": mib(ctd_pss0),
            "pss_mib_during": mib(ctd_pss1),
            "growth_mib_per_pod": mib(ctd_pss1 - ctd_pss0) / npods,
            "fds_before": ctd_fds0.0, "fds_during": ctd_fds1.0,
            "inotify_during": ctd_fds1.1,
            "threads_before": ctd_threads0, "threads_during": ctd_threads1,
        },
        "cgroups": {
            "found": cg_found,
            "kmem_mib_per_pod": kmem as f64 / 1048576.0 / npods,
            "usage_mib_per_pod": usage as f64 / 1048576.0 / npods,
            "version": if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { 2 } else { 1 },
        },
        "mem_available_mib": {
            "before": avail0 as f64 / 1024.0,
            "during": avail1 as f64 / 1024.0,
            "after": avail2 as f64 / 1024.0,
            "drop": (avail0 as f64 - avail1 as f64) / 1024.0,
            "not_returned": (avail0 as f64 - avail2 as f64) / 1024.0,
        },
        "leftovers": checks,
        "leftovers_ok": all_ok,
    })
}

// ---- the table -------------------------------------------------------------------------

fn f1(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.1}"))
        .unwrap_or_else(|| "–".into())
}

fn lat(r: &Value, call: &str) -> String {
    let l = &r["latency_ms"][call];
    format!("{} / {}", f1(&l["median"]), f1(&l["p99"]))
}

fn role_mib(r: &Value, roles: &[&str]) -> String {
    let mut sum = 0.0;
    let mut any = false;
    for role in roles {
        if let Some(v) = r["pss"]["roles"][role]["pss_mib_per_pod"].as_f64() {
            sum += v;
            any = true;
        }
    }
    if any {
        format!("{sum:.1}")
    } else {
        "–".into()
    }
}

fn leftovers(r: &Value) -> String {
    if r["leftovers_ok"] == json!(true) {
        return "none".into();
    }
    r["leftovers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] != json!(true))
        .map(|c| format!("{} {}", c["check"].as_str().unwrap_or(""), c["left"]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(results: &[Value]) -> String {
    let mut t = String::new();
    t.push_str(
        "| N | kind | pods | PSS/pod MB | shim | zygote | container | pause | other | containerd +MB/pod | kmem/pod MB | cgroup mem/pod MB | RunPodSandbox ms med / p99 | Create ms | Start ms | total ms | pods/s | MemAvailable drop MB | leftovers |\n",
    );
    t.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---:|---|\n");
    for r in results {
        let pods = if r["pods_running"] == r["pods_requested"] {
            r["pods_running"].to_string()
        } else {
            format!("{} of {}", r["pods_running"], r["pods_requested"])
        };
        t.push_str(&format!(
            "| {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
            r["n"],
            r["kind"].as_str().unwrap_or(""),
            pods,
            f1(&r["pss"]["per_pod_mib"]),
            role_mib(r, &["shim"]),
            role_mib(r, &["zygote"]),
            role_mib(r, &["container", "sleep"]),
            role_mib(r, &["pause"]),
            role_mib(r, &["native-helper", "runc", "other"]),
            f1(&r["containerd"]["growth_mib_per_pod"]),
            f1(&r["cgroups"]["kmem_mib_per_pod"]),
            f1(&r["cgroups"]["usage_mib_per_pod"]),
            lat(r, "run_pod_sandbox"),
            lat(r, "create_container"),
            lat(r, "start_container"),
            lat(r, "total"),
            f1(&r["pods_per_s"]),
            r["mem_available_mib"]["drop"].as_f64().unwrap_or(0.0),
            leftovers(r),
        ));
    }
    // Ratios Wasm / runc at the same N.
    let mut ratios = Vec::new();
    for r in results.iter().filter(|r| r["kind"] != "runc") {
        let Some(base) = results
            .iter()
            .find(|b| b["kind"] == "runc" && b["n"] == r["n"])
        else {
            continue;
        };
        let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "–".into(),
        };
        ratios.push(format!(
            "| {} | {}/runc | PSS/pod {} | StartContainer median {} | total median {} (p99 {}) | pods/s {} |\n",
            r["n"],
            r["kind"].as_str().unwrap_or(""),
            ratio(&r["pss"]["per_pod_mib"], &base["pss"]["per_pod_mib"]),
            ratio(
                &r["latency_ms"]["start_container"]["median"],
                &base["latency_ms"]["start_container"]["median"]
            ),
            ratio(&r["latency_ms"]["total"]["median"], &base["latency_ms"]["total"]["median"]),
            ratio(&r["latency_ms"]["total"]["p99"], &base["latency_ms"]["total"]["p99"]),
            ratio(&r["pods_per_s"], &base["pods_per_s"]),
        ));
    }
    if !ratios.is_empty() {
        t.push_str("\n| N | ratio | PSS | start latency | per-pod latency | throughput |\n|---:|---|---|---|---|---|\n");
        for line in ratios {
            t.push_str(&line);
        }
    }
    t
}

fn main() {
    let ns: Vec<usize> = env_or("DENSITY_N", "10 100 1000")
        .split_whitespace()
        .map(|v| {
            v.parse()
                .ok()
                .filter(|n| *n >= 1)
                .unwrap_or_else(|| die(&format!("DENSITY_N: {v:?} is not a count of pods")))
        })
        .collect();
    let kinds: Vec<Kind> = env_or("DENSITY_KINDS", &KINDS.join(" "))
        .split_whitespace()
        .map(kind)
        .collect();
    let ctd_dir = PathBuf::from(need_env("CTD_DIR"));
    let s = Settings {
        address: need_env("CONTAINERD_ADDRESS"),
        ctd_pid: need_env("CTD_PID")
            .parse()
            .unwrap_or_else(|_| die("CTD_PID is not a pid")),
        cgroup_parent: need_env("CTD_CGROUP_PARENT"),
        network: need_env("CTD_CNI_NETWORK"),
        bridge: need_env("CTD_CNI_BRIDGE"),
        ipam_dir: PathBuf::from(need_env("CTD_CNI_DATA_DIR")),
        par: env_num("DENSITY_PARALLEL", 4).max(1) as usize,
        settle: Duration::from_millis(env_num("DENSITY_SETTLE_MS", 2000)),
        min_avail_kib: env_num("DENSITY_MIN_AVAILABLE_MB", 1024) * 1024,
        ctd_dir,
    };
    let out = PathBuf::from(env_or(
        "DENSITY_OUT",
        &s.ctd_dir.join("density").to_string_lossy(),
    ));
    std::fs::create_dir_all(&out).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", out.display())));
    cri_image("pause");
    let mut results = Vec::new();
    for n in &ns {
        for k in &kinds {
            let r = round(&s, *n, k);
            let file = out.join(format!("round-{n}-{}.json", k.name));
            std::fs::write(&file, serde_json::to_string_pretty(&r).unwrap())
                .unwrap_or_else(|e| die(&format!("writing {}: {e}", file.display())));
            results.push(r);
            std::thread::sleep(s.settle);
        }
    }
    let all = out.join("all.json");
    std::fs::write(&all, serde_json::to_string_pretty(&results).unwrap())
        .unwrap_or_else(|e| die(&format!("writing {}: {e}", all.display())));
    let t = table(&results);
    std::fs::write(out.join("table.md"), &t)
        .unwrap_or_else(|e| die(&format!("writing table.md: {e}")));
    print!("{t}");
    let failed = results.iter().any(|r| r["pods_failed"] != json!(0));
    if failed {
        std::process::exit(2);
    }
}
