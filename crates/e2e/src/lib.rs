//! Harness for the end-to-end tests in `tests/`.
//!
//! The tests drive a real containerd through `ctr`, the way a user would. They
//! do not start containerd themselves: `scripts/test` starts a private one
//! (see `scripts/lib/containerd.sh`) and passes it in through the environment:
//!
//! - `CONTAINERD_ADDRESS` (required): the containerd socket.
//! - `E2E_RUNTIME`: the runtime under test (default `io.containerd.wasmtime.v1`).
//! - `E2E_IMAGES_DIR`: the image tarballs written by `test-images/build.sh`
//!   (default `<repo>/test-images/out`).
//! - `CTR_BIN`: the `ctr` binary (default `ctr`).
//! - `CTD_DIR`: the private containerd's folder; FIFOs and host folders for
//!   mounts are put under it, and the clean-up checks look into its state dir.
//! - `E2E_CONTAINERD_STATE`: containerd's state dir (default `$CTD_DIR/state`).
//!
//! Each test works in its own containerd namespace ([`Ns`]), imports the
//! images it needs into it, and removes what it created even when it fails
//! ([`Container`]'s `Drop`). Every `ctr` call has a timeout, so a hang fails
//! the test with what `ctr` printed instead of blocking the suite.

pub mod capabilities;
pub mod cri;
pub mod images;

use std::collections::HashSet;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long one `ctr` call may take before it is killed and the test fails.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(30);

/// The runc runtime, for comparison runs.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// Settings read from the environment once per process.
#[derive(Debug)]
pub struct Config {
    pub address: String,
    pub ctr_bin: String,
    pub runtime: String,
    pub images_dir: PathBuf,
    pub ctd_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

fn non_empty_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The harness settings. Panics (failing the test) when no containerd was given.
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let Some(address) = non_empty_env("CONTAINERD_ADDRESS") else {
            return Err(
                "CONTAINERD_ADDRESS is not set. The e2e tests need a running containerd \
                 that can find the shim: run them with `scripts/test` (it builds the shim and \
                 the test images, starts a private containerd and runs this suite), or source \
                 scripts/lib/containerd.sh, call ctd_start and run \
                 `cargo test -p e2e --release` in that shell."
                    .to_string(),
            );
        };
        let ctd_dir = non_empty_env("CTD_DIR").map(PathBuf::from);
        let state_dir = non_empty_env("E2E_CONTAINERD_STATE")
            .map(PathBuf::from)
            .or_else(|| ctd_dir.as_ref().map(|d| d.join("state")));
        Ok(Config {
            address,
            ctr_bin: non_empty_env("CTR_BIN").unwrap_or_else(|| "ctr".into()),
            runtime: non_empty_env("E2E_RUNTIME")
                .unwrap_or_else(|| "io.containerd.wasmtime.v1".into()),
            images_dir: non_empty_env("E2E_IMAGES_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("test-images/out")),
            ctd_dir,
            state_dir,
        })
    });
    match config {
        Ok(c) => c,
        Err(msg) => panic!("{msg}"),
    }
}

/// What one command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub command: String,
    /// Exit code; `None` if it was killed by a signal (including our timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// stdout split into lines (without the line ends).
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// stdout and stderr together, for looking for a message wherever it went.
    pub fn all_text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Panics with the whole output unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert!(
            !self.timed_out && self.code == Some(code),
            "expected exit code {code}:\n{self}"
        );
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        if self.timed_out {
            writeln!(
                f,
                "TIMED OUT after {:.1}s and killed",
                self.elapsed.as_secs_f64()
            )?;
        } else {
            match self.code {
                Some(c) => writeln!(f, "exit code {c} after {:.2}s", self.elapsed.as_secs_f64())?,
                None => writeln!(f, "killed by a signal")?,
            }
        }
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// What a command gets on its stdin.
pub enum Input {
    /// `/dev/null`.
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// These bytes, written (followed by end of file) only once `check`
    /// returns true; polled every 50 ms while the command runs.
    When(Vec<u8>, Box<dyn Fn() -> bool + Send>),
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Runs `program args` with a timeout: on expiry the process is killed
/// (SIGKILL: `ctr run` forwards SIGTERM to the task instead of dying) and the
/// output so far is returned with `timed_out` set.
pub fn run_with_timeout(program: &str, args: &[String], input: Input, timeout: Duration) -> Output {
    let command = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(match input {
            Input::Null => Stdio::null(),
            _ => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));

    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let writer = child.stdin.take().map(|mut stdin| {
        let deadline = start + timeout;
        thread::spawn(move || {
            let bytes = match input {
                Input::Null => return,
                Input::Bytes(b) => b,
                Input::When(b, check) => {
                    while !check() {
                        if Instant::now() >= deadline {
                            return;
                        }
                        thread::sleep(Duration::from_millis(50));
                    }
                    b
                }
            };
            let _ = stdin.write_all(&bytes);
            // Dropping stdin closes it: end of file.
        })
    });

    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for `{command}`: {e}"),
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if let Some(w) = writer {
        // It returns by itself at the deadline at the latest; a broken pipe
        // after the command exited is not an error of the test.
        let _ = w.join();
    }
    Output {
        command,
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed,
        timed_out,
    }
}

/// A containerd identifier (namespace or container id) made from free text.
pub fn identifier(text: &str) -> String {
    let mut id = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    while id.ends_with('-') {
        id.pop();
    }
    id.truncate(60);
    while id.ends_with('-') {
        id.pop();
    }
    id
}

/// Images already imported by this process, as (namespace, image).
fn imported() -> &'static Mutex<HashSet<(String, String)>> {
    static IMPORTED: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    IMPORTED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The full name of a test image: `localhost/test/<name>:latest`.
pub fn image_ref(name: &str) -> String {
    format!("localhost/test/{name}:latest")
}

/// A containerd namespace owned by one test.
#[derive(Debug, Clone)]
pub struct Ns {
    pub name: String,
    config: &'static Config,
}

/// A status of a task as `ctr task ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

impl Ns {
    /// The namespace `e2e-<test>`.
    pub fn new(test: &str) -> Ns {
        let config = config();
        Ns {
            name: format!("e2e-{}", identifier(test)),
            config,
        }
    }

    /// The namespace `name` as it is (e.g. `k8s.io`, CRI's namespace).
    pub fn named(name: &str) -> Ns {
        Ns {
            name: name.to_string(),
            config: config(),
        }
    }

    pub fn config(&self) -> &'static Config {
        self.config
    }

    fn ctr_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "--address".to_string(),
            self.config.address.clone(),
            "--namespace".to_string(),
            self.name.clone(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// `ctr ARGS` in this namespace, with stdin from /dev/null.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with(args, Input::Null, CTR_TIMEOUT)
    }

    pub fn ctr_with(&self, args: &[&str], input: Input, timeout: Duration) -> Output {
        run_with_timeout(&self.config.ctr_bin, &self.ctr_args(args), input, timeout)
    }

    /// `ctr ARGS`, failing the test unless it exits 0.
    #[track_caller]
    pub fn ctr_ok(&self, args: &[&str]) -> Output {
        let out = self.ctr(args);
        out.assert_success();
        out
    }

    /// `ctr task exec --exec-id EXEC_ID ID ARGS...`: runs a process in the running task `id`
    /// and returns what it printed; ctr's exit code is the process's.
    pub fn task_exec(&self, id: &str, exec_id: &str, args: &[&str]) -> Output {
        let mut all = vec!["task".to_string(), "exec".into()];
        if let Some(dir) = &self.config.ctd_dir {
            all.push("--fifo-dir".into());
            all.push(dir.join("fifo").to_string_lossy().into_owned());
        }
        all.extend(["--exec-id".into(), exec_id.into(), id.into()]);
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.ctr(&all)
    }

    /// Imports `<images dir>/<name>.tar` into this namespace (once per
    /// process) and returns the image's full name.
    #[track_caller]
    pub fn image(&self, name: &str) -> String {
        let reference = image_ref(name);
        let key = (self.name.clone(), name.to_string());
        // Imports are serialised: concurrent ingestion of the same blobs into
        // the shared content store only makes them slower.
        let mut done = imported().lock().unwrap_or_else(|e| e.into_inner());
        if done.contains(&key) {
            return reference;
        }
        let tar = self.config.images_dir.join(format!("{name}.tar"));
        assert!(
            tar.is_file(),
            "image tarball {} does not exist: build the test images with \
             `bash test-images/build.sh` (scripts/test does) or set E2E_IMAGES_DIR",
            tar.display()
        );
        let tar = tar.to_string_lossy().into_owned();
        let mut out = self.ctr_with(&["image", "import", &tar], Input::Null, CTR_TIMEOUT * 2);
        if !out.success() {
            // One retry: a concurrent import from another process may have
            // held a content ref.
            thread::sleep(Duration::from_millis(500));
            out = self.ctr_with(&["image", "import", &tar], Input::Null, CTR_TIMEOUT * 2);
        }
        assert!(out.success(), "importing {tar} failed:\n{out}");
        let list = self.ctr_ok(&["image", "ls", "-q"]);
        assert!(
            list.lines().contains(&reference.as_str()),
            "importing {tar} did not create {reference}; images in {}:\n{}",
            self.name,
            list.stdout
        );
        done.insert(key);
        reference
    }

    /// A container id unique in this process: `<label>-<n>`, and removes any
    /// container left with that id by an earlier run against the same containerd.
    pub fn container(&self, label: &str) -> Container {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", identifier(label));
        let c = Container {
            ns: self.clone(),
            id,
            armed: true,
        };
        if self.container_ids().contains(&c.id) {
            c.cleanup();
        }
        c
    }

    /// `ctr task ls`, parsed.
    #[track_caller]
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines()
            .iter()
            .skip(1)
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                Some(TaskInfo {
                    id: f.next()?.to_string(),
                    pid: f.next()?.parse().ok()?,
                    status: f.next()?.to_string(),
                })
            })
            .collect()
    }

    /// The task `id` as `ctr task ls` shows it, if there is one.
    #[track_caller]
    pub fn task(&self, id: &str) -> Option<TaskInfo> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// `ctr container ls -q`.
    #[track_caller]
    pub fn container_ids(&self) -> Vec<String> {
        self.ctr_ok(&["container", "ls", "-q"])
            .lines()
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Starts describing a `ctr run` of a test image with the runtime under test.
    pub fn run(&self, image: &str) -> Run<'_> {
        Run {
            ns: self,
            image: image.to_string(),
            runtime: self.config.runtime.clone(),
            env: Vec::new(),
            cwd: None,
            mounts: Vec::new(),
            flags: Vec::new(),
            args: Vec::new(),
            stdin: None,
            timeout: CTR_TIMEOUT,
            present: false,
        }
    }
}

/// A container id and the promise to remove it: on drop, its task is killed
/// and deleted and the container removed (errors ignored).
pub struct Container {
    pub ns: Ns,
    pub id: String,
    armed: bool,
}

impl Container {
    /// Kill and delete the task, remove the container; errors are ignored.
    pub fn cleanup(&self) {
        let ns = &self.ns;
        let timeout = Duration::from_secs(15);
        let id = self.id.as_str();
        let _ = ns.ctr_with(&["task", "kill", "-s", "SIGKILL", id], Input::Null, timeout);
        let _ = ns.ctr_with(&["task", "rm", "-f", id], Input::Null, timeout);
        let _ = ns.ctr_with(&["container", "rm", id], Input::Null, timeout);
    }

    /// `ctr task exec` into this task; see [`Ns::task_exec`].
    pub fn exec(&self, exec_id: &str, args: &[&str]) -> Output {
        self.ns.task_exec(&self.id, exec_id, args)
    }

    /// Do not clean up on drop (the test removed it itself).
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// The task's status (`RUNNING`, `STOPPED`, ...) or None if there is no task.
    #[track_caller]
    pub fn status(&self) -> Option<String> {
        self.ns.task(&self.id).map(|t| t.status)
    }

    /// Polls `ctr task ls` until the task has `status`; returns how long it took,
    /// or None if it did not within `timeout`.
    #[track_caller]
    pub fn wait_status(&self, status: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.status().as_deref() == Some(status) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctr task delete ID`, returning the task's exit code. ctr 1.6 exits 0
    /// and reports a non-zero code only as the warning
    /// `task ID exit with non-zero exit code N`; later versions print the
    /// same. No such line means 0.
    #[track_caller]
    pub fn delete_task(&self) -> (i32, Output) {
        let out = self.ns.ctr(&["task", "delete", &self.id]);
        assert!(
            !out.timed_out && (out.success() || exit_code_in(&out.all_text()).is_some()),
            "ctr task delete failed:\n{out}"
        );
        let code = exit_code_in(&out.all_text()).unwrap_or(0);
        (code, out)
    }
}

/// The N of a `... exit code N` message.
pub fn exit_code_in(text: &str) -> Option<i32> {
    let at = text.find("exit code ")? + "exit code ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.armed {
            self.cleanup();
        }
    }
}

/// A `ctr run` being described.
pub struct Run<'a> {
    ns: &'a Ns,
    image: String,
    runtime: String,
    env: Vec<String>,
    cwd: Option<String>,
    mounts: Vec<String>,
    /// Further `ctr run` flags, in order (`--annotation k=v`, `--memory-limit n`, ...).
    flags: Vec<String>,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    /// The image is already in the namespace: `image` is its full name.
    present: bool,
}

impl Run<'_> {
    /// `--annotation KEY=VALUE`.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.flags
            .extend(["--annotation".into(), format!("{key}={value}")]);
        self
    }

    /// Any further `ctr run` flags, e.g. `["--platform", "wasip1/wasm"]`.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Run an image already in the namespace (pulled, or imported by the test) by its full
    /// name instead of a test image tarball.
    pub fn present(mut self) -> Self {
        self.present = true;
        self
    }

    /// `--memory-limit BYTES` (linux.resources.memory.limit).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.flags
            .extend(["--memory-limit".into(), bytes.to_string()]);
        self
    }

    /// `--mount type=tmpfs,...,dst=DST,options=size=SIZE`.
    pub fn tmpfs(mut self, dst: &str, size: &str) -> Self {
        self.mounts.push(format!(
            "type=tmpfs,src=tmpfs,dst={dst},options=size={size}"
        ));
        self
    }

    pub fn runtime(mut self, runtime: &str) -> Self {
        self.runtime = runtime.to_string();
        self
    }

    /// `--env K=V`.
    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.to_string());
        self
    }

    /// `--cwd DIR`.
    pub fn cwd(mut self, dir: &str) -> Self {
        self.cwd = Some(dir.to_string());
        self
    }

    /// `--mount type=bind,src=SRC,dst=DST,options=rbind:rw|ro`.
    pub fn bind(mut self, src: &Path, dst: &str, read_only: bool) -> Self {
        self.mounts.push(format!(
            "type=bind,src={},dst={dst},options=rbind:{}",
            src.display(),
            if read_only { "ro" } else { "rw" }
        ));
        self
    }

    /// The process arguments after the container id (they replace the image's
    /// entrypoint and cmd, so the module path comes first).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args = args.into_iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Feed these bytes to the task's stdin, then end of file. They are
    /// written only once the task is RUNNING: ctr 1.6 loses the end of file of
    /// an input that ends before the task is created (it sets up its CloseIO
    /// call only after NewTask returns), and the task would wait forever.
    pub fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_vec());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn ctr_args(&self, mode: &str, id: &str) -> Vec<String> {
        let mut a = vec!["run".to_string(), "--runtime".into(), self.runtime.clone()];
        if !mode.is_empty() {
            a.push(mode.into());
        }
        if let Some(dir) = &self.ns.config.ctd_dir {
            // Keep the IO FIFOs under the private containerd's folder
            // (ctr's default is /run/containerd/fifo).
            a.push("--fifo-dir".into());
            a.push(dir.join("fifo").to_string_lossy().into_owned());
        }
        for e in &self.env {
            a.push("--env".into());
            a.push(e.clone());
        }
        if let Some(cwd) = &self.cwd {
            a.push("--cwd".into());
            a.push(cwd.clone());
        }
        for m in &self.mounts {
            a.push("--mount".into());
            a.push(m.clone());
        }
        a.extend(self.flags.iter().cloned());
        a.push(if self.present {
            self.image.clone()
        } else {
            self.ns.image(&self.image)
        });
        a.push(id.to_string());
        a.extend(self.args.iter().cloned());
        a
    }

    fn exec(&self, mode: &str, container: &Container) -> Output {
        let args = self.ctr_args(mode, &container.id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let input = match &self.stdin {
            None => Input::Null,
            Some(bytes) => {
                let ns = self.ns.clone();
                let id = container.id.clone();
                Input::When(
                    bytes.clone(),
                    Box::new(move || {
                        let out = ns.ctr(&["task", "ls"]);
                        out.lines().iter().any(|l| {
                            let f: Vec<&str> = l.split_whitespace().collect();
                            f.len() >= 3 && f[0] == id && f[2] == "RUNNING"
                        })
                    }),
                )
            }
        };
        self.ns.ctr_with(&args, input, self.timeout)
    }

    /// `ctr run --rm ...`: runs to completion and returns what it printed;
    /// ctr's exit code is the task's.
    pub fn rm(self, label: &str) -> Output {
        self.rm_id(label).1
    }

    /// Like [`Run::rm`], also returning the container's id (disarmed unless
    /// ctr had to be killed).
    pub fn rm_id(self, label: &str) -> (Container, Output) {
        let mut c = self.ns.container(label);
        let out = self.exec("--rm", &c);
        if !out.timed_out {
            // ctr removed the container itself (also when the task failed).
            c.disarm();
        }
        (c, out)
    }

    /// `ctr run ...` without --rm: runs to completion (ctr deletes the task
    /// but keeps the container, e.g. for `ctr container info`).
    pub fn keep(self, label: &str) -> (Container, Output) {
        let c = self.ns.container(label);
        let out = self.exec("", &c);
        (c, out)
    }

    /// `ctr run -d ...`: starts the task and returns; fails the test if that fails.
    #[track_caller]
    pub fn detach(self, label: &str) -> Container {
        let c = self.ns.container(label);
        let out = self.exec("-d", &c);
        assert!(out.success(), "ctr run -d failed:\n{out}");
        c
    }
}

/// The two builds of the probe guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// WASI preview 1 core module (`localhost/test/probe:latest`).
    P1,
    /// WASI preview 2 component (`localhost/test/probe-p2:latest`).
    P2,
}

impl Probe {
    pub fn image(self) -> &'static str {
        match self {
            Probe::P1 => "probe",
            Probe::P2 => "probe-p2",
        }
    }

    pub fn tag(self) -> &'static str {
        match self {
            Probe::P1 => "p1",
            Probe::P2 => "p2",
        }
    }

    /// Fails the test unless `out` ended with exit code `code`. A preview 2
    /// component can only report success or failure (`wasi:cli/exit` 0.2 has
    /// no exit code), so for [`Probe::P2`] a non-zero `code` may show as 1.
    #[track_caller]
    pub fn assert_code(self, out: &Output, code: i32) {
        let ok = match (self, out.code) {
            _ if out.timed_out => false,
            (_, Some(c)) if c == code => true,
            (Probe::P2, Some(1)) => code != 0,
            _ => false,
        };
        assert!(
            ok,
            "expected exit code {code}{}:\n{out}",
            if self == Probe::P2 && code != 0 {
                " (or 1 from a preview 2 component)"
            } else {
                ""
            }
        );
    }

    /// A namespace for `test` run with this probe.
    pub fn ns(self, test: &str) -> Ns {
        Ns::new(&format!("{test}-{}", self.tag()))
    }
}

/// Declares, for each `name => check`, a module `name` with the tests `p1`
/// and `p2` calling `check(Probe::P1)` and `check(Probe::P2)`; `p2` is skipped
/// on an engine that lacks components (see [`capabilities`]).
#[macro_export]
macro_rules! probe_tests {
    ($($name:ident => $check:ident;)*) => {
        $(
            mod $name {
                #[test]
                fn p1() {
                    super::$check($crate::Probe::P1)
                }

                #[test]
                fn p2() {
                    if $crate::capabilities::skip_unless_runtime_has(
                        "components",
                        concat!(module_path!(), "::p2"),
                    ) {
                        return;
                    }
                    super::$check($crate::Probe::P2)
                }
            }
        )*
    };
}

/// A folder for a test's host files: under `$CTD_DIR` when set (so that
/// stopping the private containerd removes leftovers), else the temp dir.
pub fn host_dir(label: &str) -> tempfile::TempDir {
    let base = config()
        .ctd_dir
        .as_ref()
        .map(|d| d.join("e2e-host"))
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("mkdir {}: {e}", base.display()));
    tempfile::Builder::new()
        .prefix(&format!("{}-", identifier(label)))
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("temp dir under {}: {e}", base.display()))
}

/// Pids (other than this process) whose command line contains `needle`,
/// with the command lines.
/// The `comm` an instance process of container `id` has (`wasm:` and the id's start: the
/// kernel keeps 15 bytes).
pub fn instance_name(id: &str) -> String {
    format!("wasm:{id}").chars().take(15).collect()
}

/// Every process's pid and `/proc/PID` folder.
fn processes() -> impl Iterator<Item = (u32, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
}

/// Processes whose `comm` is `name`, with it.
pub fn processes_named(name: &str) -> Vec<(u32, String)> {
    processes()
        .filter_map(|(pid, dir)| {
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            (comm.trim_end() == name).then(|| (pid, name.to_string()))
        })
        .collect()
}

pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    processes()
        .filter(|(pid, _)| *pid != me)
        .filter_map(|(pid, dir)| {
            let raw = std::fs::read(dir.join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| (pid, cmdline.trim_end().to_string()))
        })
        .collect()
}

/// Where the processes whose command line mentions `needle` are, thread by thread (state and
/// the kernel function each sleeps in): what a test prints when a call hangs.
pub fn where_processes_wait(needle: &str) -> String {
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::new();
    for (pid, cmdline) in processes_mentioning(needle) {
        out.push_str(&format!("{pid} {cmdline}\n"));
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let status = read(task.path().join("status"));
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or("")
                    .trim()
                    .to_string()
            };
            out.push_str(&format!(
                "  thread {} {:?} {} in {} (syscall {})\n",
                task.file_name().to_string_lossy(),
                field("Name:"),
                field("State:"),
                read(task.path().join("wchan")),
                read(task.path().join("syscall")).trim()
            ));
        }
        out.push_str(&children_of(pid));
        // A process that runs rather than waits: where, in user space.
        let state = read(PathBuf::from(format!("/proc/{pid}/stat")));
        let running = state
            .rsplit(") ")
            .next()
            .is_some_and(|s| s.starts_with('R'));
        if running || cmdline.ends_with(" start") {
            out.push_str(&user_stacks(pid));
        }
    }
    out
}

/// The children of `pid`, zombies included, with their state.
fn children_of(pid: u32) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if ppid == Some(pid.to_string().as_str()) {
            out.push_str(&format!("  child {head}) {}\n", state.unwrap_or("?")));
        }
    }
    out
}

/// The user-space stacks of `pid`'s threads, from gdb when it is installed.
fn user_stacks(pid: u32) -> String {
    let out = Command::new("timeout")
        .args(["20", "gdb", "-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "thread apply all bt 25"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with('#') || l.starts_with("Thread"))
            .map(|l| format!("    {l}\n"))
            .collect(),
        Err(e) => format!("    (no user-space stacks: {e})\n"),
    }
}

/// Where a shim for `ns`/`id` listens: containerd (1.6 and later) and the
/// shim libraries put the socket at
/// `/run/containerd/s/<sha256 of "<containerd address>/<ns>/<id>">`.
pub fn shim_socket_path(ns: &str, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = format!("{}/{ns}/{id}", config().address);
    PathBuf::from("/run/containerd/s").join(hex::encode(Sha256::digest(key.as_bytes())))
}

/// The socket of the Wasm shim serving namespace `ns` (one server per node, runtime and
/// namespace: its group is `<engine>-pods`).
pub fn wasm_shim_socket_path(ns: &str) -> PathBuf {
    shim_socket_path(ns, &format!("{}-pods", engine_of(&config().runtime)))
}

/// `io.containerd.wasmtime.v1` -> `wasmtime`.
pub fn engine_of(runtime: &str) -> &str {
    runtime
        .strip_prefix("io.containerd.")
        .and_then(|r| r.split('.').next())
        .unwrap_or(runtime)
}

/// The pid of a process's parent, from `/proc/PID/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Cgroup folders `<hierarchy>/<ns>/<id>` that exist (ctr run asks for the
/// cgroup path `/<ns>/<id>`; cgroup v1 has one hierarchy per controller).
pub fn cgroups_of(ns: &str, id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found = Vec::new();
    let v2 = root.join(ns).join(id);
    if v2.is_dir() {
        found.push(v2);
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path().join(ns).join(id);
            if path.is_dir() {
                found.push(path);
            }
        }
    }
    found
}

/// Lines of /proc/self/mountinfo that contain `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Paths under `root` (recursively) whose file name contains `needle`.
pub fn files_named_like(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(needle) {
                found.push(path.clone());
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
            }
        }
    }
    found
}

/// The version (major, minor) of the containerd under test: `CTD_VERSION` (set by
/// `ctd_start`) or the server version `ctr version` reports.
pub fn containerd_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let text = non_empty_env("CTD_VERSION").unwrap_or_else(|| {
            let c = config();
            let out = run_with_timeout(
                &c.ctr_bin,
                &["--address".into(), c.address.clone(), "version".into()],
                Input::Null,
                CTR_TIMEOUT,
            );
            out.assert_success();
            // The second `Version:` line is the server's.
            out.stdout
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Version:"))
                .nth(1)
                .unwrap_or_default()
                .trim()
                .trim_start_matches('v')
                .to_string()
        });
        let mut parts = text.split(|c: char| !c.is_ascii_digit());
        let mut next = || parts.next().and_then(|p| p.parse().ok());
        match (next(), next()) {
            (Some(major), Some(minor)) => (major, minor),
            _ => panic!("cannot tell the containerd version from {text:?}"),
        }
    })
}

/// What the private containerd logged so far (the shims' logs included), from
/// `$CTD_DIR/containerd.log`; None without `CTD_DIR`.
pub fn containerd_log() -> Option<String> {
    let dir = config().ctd_dir.as_ref()?;
    let path = dir.join("containerd.log");
    Some(
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    )
}

/// The shim's log lines about container `id`, from containerd's log.
pub fn shim_lines(id: &str) -> Vec<String> {
    let log = containerd_log().expect("CTD_DIR is needed to read the shim's log");
    let needle = format!("{id}: ");
    log.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// How the start of container `id` got native code for the module `digest`, from the shim's
/// create line: `"compiled"` or `"cache hit"`.
pub fn cache_outcome(id: &str, digest: &str) -> &'static str {
    let lines = shim_lines(id);
    // `<id>: hello.wasm ... (Module, N bytes, sha256:...) policy .. us, read .. us, compiled|cache hit .. us`
    let create = lines
        .iter()
        .find(|l| l.contains(&format!("bytes, {digest})")))
        .unwrap_or_else(|| {
            panic!(
                "{id}: no create line with the module digest {digest}:\n{}",
                lines.join("\n")
            )
        });
    if create.contains(" compiled ") {
        "compiled"
    } else if create.contains(" cache hit ") {
        "cache hit"
    } else {
        panic!("{id}: neither compiled nor cache hit: {create}")
    }
}

/// The shim binary containerd starts for the runtime under test
/// (`io.containerd.wasmtime.v1` -> `containerd-shim-wasmtime-v1`), looked up in the `PATH`
/// containerd was started with, as containerd does (`ctd_start` records it).
pub fn shim_binary() -> PathBuf {
    let runtime = &config().runtime;
    let name = format!(
        "containerd-shim-{}",
        runtime
            .strip_prefix("io.containerd.")
            .unwrap_or(runtime)
            .replace('.', "-")
    );
    let cmd = config()
        .ctd_dir
        .as_ref()
        .map(|d| d.join("containerd.cmd"))
        .expect("CTD_DIR is needed to find the shim binary");
    let recorded =
        std::fs::read_to_string(&cmd).unwrap_or_else(|e| panic!("reading {}: {e}", cmd.display()));
    let path = recorded.lines().nth(1).unwrap_or_default();
    path.split(':')
        .map(|dir| Path::new(dir).join(&name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on containerd's PATH {path}"))
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// containerd's state dir (for the bundles), from [`Config::state_dir`].
pub fn state_dir() -> PathBuf {
    config().state_dir.clone().unwrap_or_else(|| {
        panic!(
            "the clean-up checks need containerd's state dir: set CTD_DIR (scripts/test does) \
             or E2E_CONTAINERD_STATE"
        )
    })
}

/// Everything on the host that still refers to the container `c`: processes, mounts,
/// its bundle (which holds the shim's and libcontainer's state), FIFOs, cgroups, the shim
/// socket, the task and the container.
pub fn leftovers(ns: &Ns, c: &Container) -> Vec<String> {
    let mut left = Vec::new();
    for (pid, cmd) in processes_mentioning(&c.id) {
        left.push(format!("process {pid}: {cmd}"));
    }
    for (pid, name) in processes_named(&instance_name(&c.id)) {
        left.push(format!("instance process {pid}: {name}"));
    }
    for m in mounts_mentioning(&c.id) {
        left.push(format!("mount: {m}"));
    }
    let bundle = state_dir()
        .join("io.containerd.runtime.v2.task")
        .join(&ns.name)
        .join(&c.id);
    if bundle.exists() {
        left.push(format!("bundle dir: {}", bundle.display()));
    }
    let mut fifo_dirs = vec![PathBuf::from("/run/containerd/fifo")];
    if let Some(d) = &config().ctd_dir {
        fifo_dirs.push(d.join("fifo"));
    }
    for dir in fifo_dirs {
        for f in files_named_like(&dir, &c.id) {
            left.push(format!("fifo: {}", f.display()));
        }
    }
    for cg in cgroups_of(&ns.name, &c.id) {
        left.push(format!("cgroup: {}", cg.display()));
    }
    // The namespace's shim exits once it has served its last container.
    for socket in [
        shim_socket_path(&ns.name, &c.id),
        wasm_shim_socket_path(&ns.name),
    ] {
        if socket.exists() {
            left.push(format!("shim socket: {}", socket.display()));
        }
    }
    if ns.task(&c.id).is_some() {
        left.push("task still listed by ctr task ls".into());
    }
    if ns.container_ids().contains(&c.id) {
        left.push("container still listed by ctr container ls".into());
    }
    left
}

/// Fails the test unless [`leftovers`] is empty within 5 s.
#[track_caller]
pub fn assert_nothing_left(ns: &Ns, c: &Container) {
    // The shim exits asynchronously after delete: give it a moment.
    let mut left = Vec::new();
    let clean = eventually(Duration::from_secs(5), || {
        left = leftovers(ns, c);
        left.is_empty()
    });
    assert!(
        clean,
        "left behind by {} after delete:\n{}",
        c.id,
        left.join("\n")
    );
}

/// A server on the host's loopback that answers each connection `200 ok` (HTTP/1.1, then
/// closes) and counts the connections: the upstream of the network allowlist tests.
pub fn counting_http_server() -> (u16, std::sync::Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
            );
        }
    });
    (port, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_valid() {
        assert_eq!(identifier("args::p1"), "args-p1");
        assert_eq!(identifier("Hello World__x"), "hello-world-x");
        assert_eq!(identifier("--a--"), "a");
        assert!(identifier(&"x".repeat(200)).len() <= 60);
    }

    #[test]
    fn exit_codes_are_found() {
        assert_eq!(
            exit_code_in("level=warning msg=\"task t5 exit with non-zero exit code 137\""),
            Some(137)
        );
        assert_eq!(exit_code_in("nothing"), None);
    }

    #[test]
    fn timeouts_kill() {
        let out = run_with_timeout(
            "sleep",
            &["10".to_string()],
            Input::Null,
            Duration::from_millis(300),
        );
        assert!(out.timed_out);
        assert!(out.elapsed < Duration::from_secs(5));
        let out = run_with_timeout(
            "sh",
            &["-c".into(), "cat; echo err >&2; exit 3".into()],
            Input::Bytes(b"in".to_vec()),
            CTR_TIMEOUT,
        );
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "in");
        assert_eq!(out.stderr, "err\n");
    }
}
