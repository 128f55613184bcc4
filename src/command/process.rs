//! What a command's processes need from the OS: starting and reaping them, signals, clock
//! ticks and `/proc` scans.
//!
//! On Linux a command is started with `posix_spawn` (no fork: cheap on the JS thread however
//! large Node.js is), its program found along the PATH the child gets (never run through
//! `/bin/sh`), with only descriptors 0-2, default signal dispositions and an empty signal
//! mask: nothing of Node.js' own state reaches it. One thread reaps every command (pidfd +
//! epoll; polling where pidfds are unavailable). Elsewhere `tokio::process` starts and reaps
//! them. Only Unix has process groups and signals: elsewhere nothing is signalled (a command
//! is ended with `Child::start_kill`, see `command::wait`) and usage is unknown.

use std::io;
use std::process::ExitStatus;
#[cfg(target_os = "linux")]
use std::time::Instant;

use super::Spec;

#[cfg(unix)]
mod sys {
  pub const SIGKILL: i32 = libc::SIGKILL;

  /// Sends `sig` to the process group `pgid`; false when there is no such group. Never
  /// signals group 0 or 1 (our own group, every process).
  pub fn signal_group(pgid: u32, sig: i32) -> bool {
    signal(pgid, true, sig)
  }

  pub fn signal_pid(pid: u32, sig: i32) -> bool {
    signal(pid, false, sig)
  }

  fn signal(id: u32, group: bool, sig: i32) -> bool {
    let Ok(id) = i32::try_from(id) else {
      return false;
    };
    if id <= 1 {
      return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    unsafe { libc::kill(if group { -id } else { id }, sig) == 0 }
  }

  /// A positive `sysconf` value, else `fallback`.
  fn sysconf(name: libc::c_int, fallback: i64) -> i64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
      v as i64
    } else {
      fallback
    }
  }

  pub fn clock_ticks_per_second() -> f64 {
    sysconf(libc::_SC_CLK_TCK, 100) as f64
  }

  #[cfg(target_os = "linux")]
  pub fn page_size() -> u64 {
    sysconf(libc::_SC_PAGESIZE, 4096) as u64
  }
}

#[cfg(not(unix))]
mod sys {
  pub const SIGKILL: i32 = 9;

  pub fn signal_group(_pgid: u32, _sig: i32) -> bool {
    false
  }

  pub fn signal_pid(_pid: u32, _sig: i32) -> bool {
    false
  }

  pub fn clock_ticks_per_second() -> f64 {
    100.0
  }
}

pub(super) use sys::{clock_ticks_per_second, signal_group, signal_pid, SIGKILL};

// ----- starting and reaping ------------------------------------------------------------------

/// A started command: its pid, its pipes, and the news of its exit.
pub(super) struct Child {
  pid: u32,
  pub(super) stdin: Option<tokio::process::ChildStdin>,
  pub(super) stdout: Option<tokio::process::ChildStdout>,
  pub(super) stderr: Option<tokio::process::ChildStderr>,
  #[cfg(target_os = "linux")]
  exit: tokio::sync::oneshot::Receiver<io::Result<ExitStatus>>,
  #[cfg(not(target_os = "linux"))]
  inner: tokio::process::Child,
}

impl Child {
  pub(super) fn id(&self) -> u32 {
    self.pid
  }

  /// Resolves once the process has exited and been reaped. Cancel-safe; not to be polled
  /// again once it has resolved.
  pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
    #[cfg(target_os = "linux")]
    {
      (&mut self.exit)
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the reaper thread stopped")))
    }
    #[cfg(not(target_os = "linux"))]
    {
      self.inner.wait().await
    }
  }

  /// Where tokio reaps: a check for the exit of our own (see `command::wait`). On Linux
  /// the reaper does it: always `None`.
  pub(super) fn try_wait(&mut self) -> Option<io::Result<ExitStatus>> {
    #[cfg(target_os = "linux")]
    {
      None
    }
    #[cfg(not(target_os = "linux"))]
    {
      self.inner.try_wait().transpose()
    }
  }

  #[cfg(not(unix))]
  pub(super) fn start_kill(&mut self) {
    let _ = self.inner.start_kill();
  }
}

/// Starts `spec` in a new process group. Must run inside a tokio runtime context (the pipes
/// are registered with its reactor).
#[cfg(target_os = "linux")]
pub(super) fn spawn(spec: &Spec) -> io::Result<Child> {
  use std::os::fd::OwnedFd;
  let reaper = reaper::start()?;
  let launched = launch::launch(&launch::Launch {
    program: &spec.program,
    args: &spec.args,
    cwd: spec.cwd.as_deref(),
    env: &spec.env,
    inherit_env: spec.inherit_env,
    stdin: if spec.input.is_some() {
      launch::Io::Pipe
    } else {
      launch::Io::Null
    },
    stdout: launch::Io::Pipe,
    stderr: launch::Io::Pipe,
  })?;
  let pid = launched.pid;
  let exit = reaper.watch(pid);
  let wrap = || -> io::Result<_> {
    let stdin = launched
      .stdin
      .map(|fd: OwnedFd| tokio::process::ChildStdin::from_std(fd.into()))
      .transpose()?;
    let stdout = launched
      .stdout
      .map(|fd: OwnedFd| tokio::process::ChildStdout::from_std(fd.into()))
      .transpose()?;
    let stderr = launched
      .stderr
      .map(|fd: OwnedFd| tokio::process::ChildStderr::from_std(fd.into()))
      .transpose()?;
    Ok((stdin, stdout, stderr))
  };
  match wrap() {
    Ok((stdin, stdout, stderr)) => Ok(Child {
      pid,
      stdin,
      stdout,
      stderr,
      exit,
    }),
    Err(e) => {
      // Started, but its pipes cannot be watched: end it (the reaper reaps it).
      signal_group(pid, SIGKILL);
      Err(e)
    }
  }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn spawn(spec: &Spec) -> io::Result<Child> {
  use std::process::Stdio;
  let mut cmd = tokio::process::Command::new(&spec.program);
  cmd.args(&spec.args);
  if let Some(cwd) = &spec.cwd {
    cmd.current_dir(cwd);
  }
  if !spec.inherit_env {
    cmd.env_clear();
  }
  for (key, value) in &spec.env {
    match value {
      Some(v) => cmd.env(key, v),
      None => cmd.env_remove(key),
    };
  }
  cmd.stdin(if spec.input.is_some() {
    Stdio::piped()
  } else {
    Stdio::null()
  });
  cmd.stdout(Stdio::piped());
  cmd.stderr(Stdio::piped());
  #[cfg(unix)]
  cmd.process_group(0);
  let mut inner = cmd.spawn()?;
  Ok(Child {
    pid: inner.id().unwrap_or(0),
    stdin: inner.stdin.take(),
    stdout: inner.stdout.take(),
    stderr: inner.stderr.take(),
    inner,
  })
}

/// `posix_spawn` with everything spelled out (Linux).
#[cfg(target_os = "linux")]
pub(crate) mod launch {
  use std::collections::BTreeMap;
  use std::ffi::{CStr, CString, OsStr, OsString};
  use std::io;
  use std::mem::MaybeUninit;
  use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
  use std::os::unix::ffi::OsStrExt;
  use std::path::{Path, PathBuf};

  /// What a standard stream of the child is.
  #[derive(Debug, Clone, Copy, PartialEq, Eq)]
  pub(crate) enum Io {
    Null,
    Pipe,
  }

  pub(crate) struct Launch<'a> {
    /// A path, or a name looked up along the child's PATH; also its `argv[0]`.
    pub(crate) program: &'a str,
    pub(crate) args: &'a [String],
    pub(crate) cwd: Option<&'a str>,
    /// Variables to set (`Some`) or remove (`None`).
    pub(crate) env: &'a [(String, Option<String>)],
    pub(crate) inherit_env: bool,
    pub(crate) stdin: Io,
    pub(crate) stdout: Io,
    pub(crate) stderr: Io,
  }

  /// A started process, in a process group of its own, and our ends of its pipes.
  #[derive(Debug)]
  pub(crate) struct Launched {
    pub(crate) pid: u32,
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
  }

  type AddChdir =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const libc::c_char) -> libc::c_int;
  type AddCloseFrom = unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

  /// A libc function that older versions lack, looked up at run time (so the binary still
  /// loads with an old glibc).
  fn optional_fn(name: &CStr) -> Option<usize> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name; a null result is handled.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!f.is_null()).then_some(f as usize)
  }

  /// glibc 2.29+, musl 1.1.24+.
  fn addchdir() -> Option<AddChdir> {
    static F: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let f = (*F.get_or_init(|| optional_fn(c"posix_spawn_file_actions_addchdir_np")))?;
    // SAFETY: the symbol is the libc function of this signature.
    Some(unsafe { std::mem::transmute::<usize, AddChdir>(f) })
  }

  /// glibc 2.34+.
  fn addclosefrom() -> Option<AddCloseFrom> {
    static F: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let f = (*F.get_or_init(|| optional_fn(c"posix_spawn_file_actions_addclosefrom_np")))?;
    // SAFETY: the symbol is the libc function of this signature.
    Some(unsafe { std::mem::transmute::<usize, AddCloseFrom>(f) })
  }

  /// Starts `l`. Without `posix_spawn_file_actions_addchdir_np` (glibc before 2.29) a
  /// command with a `cwd` is forked instead, with the same clean start.
  pub(crate) fn launch(l: &Launch<'_>) -> io::Result<Launched> {
    launch_with(l, l.cwd.is_none() || addchdir().is_some())
  }

  pub(super) fn launch_with(l: &Launch<'_>, spawn: bool) -> io::Result<Launched> {
    let env = child_env(l.inherit_env, l.env);
    let path = resolve(
      l.program,
      env.get(OsStr::new("PATH")).map(OsString::as_os_str),
      l.cwd.map(Path::new),
    )?;
    if spawn {
      spawn_posix(&path, l, &env)
    } else {
      spawn_forked(&path, l, &env)
    }
  }

  /// The child's environment: ours (or nothing) with the spec's changes.
  pub(crate) fn child_env(
    inherit: bool,
    changes: &[(String, Option<String>)],
  ) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = if inherit {
      std::env::vars_os().collect()
    } else {
      BTreeMap::new()
    };
    for (key, value) in changes {
      match value {
        Some(v) => env.insert(key.into(), v.into()),
        None => env.remove(OsStr::new(key)),
      };
    }
    env
  }

  /// The file to execute for `program`: itself when it holds a `/`, else the first
  /// executable regular file `<dir>/<program>` along `path` (`/bin:/usr/bin` without one, as
  /// execvp does; an empty entry is the working directory). Entries that are relative are
  /// relative to `cwd`, the child's working directory (ours without one). ENOENT when none
  /// is found, EACCES when only files that cannot be executed are.
  pub(crate) fn resolve(program: &str, path: Option<&OsStr>, cwd: Option<&Path>) -> io::Result<PathBuf> {
    if program.contains('/') {
      return Ok(PathBuf::from(program));
    }
    if program.is_empty() {
      return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let path = path.map_or(&b"/bin:/usr/bin"[..], OsStrExt::as_bytes);
    let mut denied = false;
    for dir in path.split(|&b| b == b':') {
      let dir = if dir.is_empty() {
        Path::new(".")
      } else {
        Path::new(OsStr::from_bytes(dir))
      };
      let candidate = dir.join(program);
      let on_disk = match cwd {
        Some(cwd) if candidate.is_relative() => cwd.join(&candidate),
        _ => candidate.clone(),
      };
      let Ok(meta) = std::fs::metadata(&on_disk) else {
        continue;
      };
      if meta.is_file() && executable(&on_disk) {
        return Ok(candidate);
      }
      denied = true;
    }
    Err(io::Error::from_raw_os_error(if denied {
      libc::EACCES
    } else {
      libc::ENOENT
    }))
  }

  fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
      return false;
    };
    // SAFETY: access(2) with a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
  }

  fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
      io::Error::new(
        io::ErrorKind::InvalidInput,
        "a NUL byte in a command's program, argument or environment",
      )
    })
  }

  fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
      Ok(())
    } else {
      Err(io::Error::from_raw_os_error(ret))
    }
  }

  /// A pipe whose ends are close-on-exec and above the standard descriptors: `(read, write)`.
  fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
      return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
  }

  /// `fd`, moved above 2 if it is one of the standard descriptors (closed in this process).
  fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
      return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
      return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
  }

  /// Descriptors above 2 that an exec would keep (no close-on-exec), from `/proc/self/fd`.
  fn inheritable_fds() -> Vec<libc::c_int> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
      return Vec::new();
    };
    let fds: Vec<libc::c_int> = dir
      .flatten()
      .filter_map(|e| e.file_name().to_str()?.parse().ok())
      .filter(|&fd| fd > 2)
      .collect();
    fds
      .into_iter()
      // SAFETY: F_GETFD only reads the descriptor's flags; a closed one gives -1.
      .filter(|&fd| {
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC == 0
      })
      .collect()
  }

  /// posix_spawn's file actions, destroyed on drop. Boxed: initialised in place, never moved.
  struct FileActions(Box<MaybeUninit<libc::posix_spawn_file_actions_t>>);

  impl FileActions {
    fn new() -> io::Result<FileActions> {
      let mut fa = Box::new(MaybeUninit::uninit());
      // SAFETY: initialises the boxed value in place.
      check(unsafe { libc::posix_spawn_file_actions_init(fa.as_mut_ptr()) })?;
      Ok(FileActions(fa))
    }

    fn ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
      self.0.as_mut_ptr()
    }
  }

  impl Drop for FileActions {
    fn drop(&mut self) {
      // SAFETY: initialised in `new`.
      unsafe { libc::posix_spawn_file_actions_destroy(self.0.as_mut_ptr()) };
    }
  }

  /// posix_spawn's attributes, destroyed on drop.
  struct Attributes(Box<MaybeUninit<libc::posix_spawnattr_t>>);

  impl Attributes {
    fn new() -> io::Result<Attributes> {
      let mut a = Box::new(MaybeUninit::uninit());
      // SAFETY: initialises the boxed value in place.
      check(unsafe { libc::posix_spawnattr_init(a.as_mut_ptr()) })?;
      Ok(Attributes(a))
    }

    fn ptr(&mut self) -> *mut libc::posix_spawnattr_t {
      self.0.as_mut_ptr()
    }
  }

  impl Drop for Attributes {
    fn drop(&mut self) {
      // SAFETY: initialised in `new`.
      unsafe { libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
    }
  }

  /// NUL-terminated pointers to `items`, for argv and envp.
  fn pointers(items: &[CString]) -> Vec<*mut libc::c_char> {
    items
      .iter()
      .map(|c| c.as_ptr() as *mut libc::c_char)
      .chain(std::iter::once(std::ptr::null_mut()))
      .collect()
  }

  fn argv(l: &Launch<'_>) -> io::Result<Vec<CString>> {
    std::iter::once(l.program)
      .chain(l.args.iter().map(String::as_str))
      .map(|a| cstring(a.as_bytes()))
      .collect()
  }

  fn envp(env: &BTreeMap<OsString, OsString>) -> io::Result<Vec<CString>> {
    env
      .iter()
      .map(|(k, v)| {
        let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
        kv.extend_from_slice(k.as_bytes());
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        cstring(&kv)
      })
      .collect()
  }

  fn spawn_posix(path: &Path, l: &Launch<'_>, env: &BTreeMap<OsString, OsString>) -> io::Result<Launched> {
    let path = cstring(path.as_os_str().as_bytes())?;
    let argv = argv(l)?;
    let envp = envp(env)?;
    let cwd = l.cwd.map(|c| cstring(c.as_bytes())).transpose()?;

    let mut actions = FileActions::new()?;
    let fa = actions.ptr();
    // Our ends of the pipes, and the child's ends (closed here once it has started).
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    let mut theirs: Vec<OwnedFd> = Vec::new();
    for (target, io) in [(0, l.stdin), (1, l.stdout), (2, l.stderr)] {
      match io {
        Io::Pipe => {
          let (r, w) = pipe()?;
          let (child_end, our_end) = if target == 0 { (r, w) } else { (w, r) };
          // SAFETY: file actions initialised; both descriptors are open.
          check(unsafe { libc::posix_spawn_file_actions_adddup2(fa, child_end.as_raw_fd(), target) })?;
          ours[target as usize] = Some(our_end);
          theirs.push(child_end);
        }
        Io::Null => {
          let flags = if target == 0 {
            libc::O_RDONLY
          } else {
            libc::O_WRONLY
          };
          // SAFETY: file actions initialised; the path is a static NUL-terminated string.
          check(unsafe {
            libc::posix_spawn_file_actions_addopen(fa, target, c"/dev/null".as_ptr(), flags, 0)
          })?;
        }
      }
    }
    if let Some(cwd) = &cwd {
      let addchdir = addchdir().ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSYS))?;
      // SAFETY: file actions initialised; the path outlives the spawn.
      check(unsafe { addchdir(fa, cwd.as_ptr()) })?;
    }
    // Nothing beyond 0-2: descriptors Node.js (or whoever started it) left inheritable.
    match addclosefrom() {
      // SAFETY: file actions initialised.
      Some(closefrom) => check(unsafe { closefrom(fa, 3) })?,
      None => {
        for fd in inheritable_fds() {
          // SAFETY: file actions initialised; a descriptor closed meanwhile is skipped by libc.
          check(unsafe { libc::posix_spawn_file_actions_addclose(fa, fd) })?;
        }
      }
    }

    let mut attributes = Attributes::new()?;
    let attr = attributes.ptr();
    // SAFETY: plain sigset_t values filled by libc, attributes initialised.
    unsafe {
      let mut none: libc::sigset_t = std::mem::zeroed();
      let mut all: libc::sigset_t = std::mem::zeroed();
      libc::sigemptyset(&mut none);
      libc::sigfillset(&mut all);
      check(libc::posix_spawnattr_setsigmask(attr, &none))?;
      // Ignored signals stay ignored across exec (Node.js ignores SIGPIPE and SIGXFSZ): every
      // signal starts with its default action.
      check(libc::posix_spawnattr_setsigdefault(attr, &all))?;
      check(libc::posix_spawnattr_setpgroup(attr, 0))?;
      let flags = libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
      check(libc::posix_spawnattr_setflags(attr, flags as libc::c_short))?;
    }

    let argv_ptrs = pointers(&argv);
    let envp_ptrs = pointers(&envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid until the call returns (glibc and musl wait for the exec
    // or its failure); argv and envp are NUL-terminated arrays of NUL-terminated strings.
    check(unsafe {
      libc::posix_spawn(
        &mut pid,
        path.as_ptr(),
        fa,
        attr,
        argv_ptrs.as_ptr(),
        envp_ptrs.as_ptr(),
      )
    })?;
    drop(theirs);
    let [stdin, stdout, stderr] = ours;
    Ok(Launched {
      pid: pid as u32,
      stdin,
      stdout,
      stderr,
    })
  }

  /// fork + exec through the standard library, with the same clean start as `spawn_posix`.
  fn spawn_forked(path: &Path, l: &Launch<'_>, env: &BTreeMap<OsString, OsString>) -> io::Result<Launched> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let stdio = |io: Io| match io {
      Io::Pipe => Stdio::piped(),
      Io::Null => Stdio::null(),
    };
    let mut cmd = Command::new(path);
    cmd
      .arg0(l.program)
      .args(l.args)
      .env_clear()
      .envs(env)
      .stdin(stdio(l.stdin))
      .stdout(stdio(l.stdout))
      .stderr(stdio(l.stderr))
      .process_group(0);
    if let Some(cwd) = l.cwd {
      cmd.current_dir(cwd);
    }
    // SAFETY: sysconf has no preconditions.
    let max_fd = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 1 << 20) as libc::c_int;
    // SAFETY: runs between fork and exec, and only makes async-signal-safe calls.
    unsafe {
      cmd.pre_exec(move || {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=64 {
          if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
          }
        }
        // Close-on-exec rather than closed: the standard library's own pipe (close-on-exec
        // already) reports a failed exec to the parent.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
          for fd in 3..max_fd {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
          }
        }
        Ok(())
      });
    }
    let mut child = cmd.spawn()?;
    // Dropping a std Child neither waits nor kills: whoever launched it reaps it.
    Ok(Launched {
      pid: child.id(),
      stdin: child.stdin.take().map(OwnedFd::from),
      stdout: child.stdout.take().map(OwnedFd::from),
      stderr: child.stderr.take().map(OwnedFd::from),
    })
  }

  #[cfg(test)]
  mod tests {
    use super::*;
    use std::io::Read;

    fn tmp(name: &str) -> PathBuf {
      let dir = std::env::temp_dir().join(format!("bmad-bg-launch-{}-{name}", std::process::id()));
      let _ = std::fs::remove_dir_all(&dir);
      std::fs::create_dir_all(&dir).expect("temp dir");
      dir
    }

    fn script(dir: &Path, name: &str, body: &str, mode: u32) {
      use std::os::unix::fs::PermissionsExt;
      let p = dir.join(name);
      std::fs::write(&p, body).expect("write");
      std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn resolves_along_the_given_path_like_execvp() {
      let dir = tmp("resolve");
      script(&dir, "tool", "#!/bin/sh\n", 0o755);
      script(&dir, "plain", "#!/bin/sh\n", 0o644);
      std::fs::create_dir_all(dir.join("sub/tool")).expect("dir");
      let path = format!("{}:{}", dir.join("sub").display(), dir.display());
      let path = OsStr::new(&path);
      assert_eq!(
        resolve("tool", Some(path), None).ok(),
        Some(dir.join("tool")),
        "a directory is skipped"
      );
      let denied = resolve("plain", Some(path), None)
        .err()
        .and_then(|e| e.raw_os_error());
      assert_eq!(denied, Some(libc::EACCES));
      let missing = resolve("nope-xyz", Some(path), None)
        .err()
        .and_then(|e| e.raw_os_error());
      assert_eq!(missing, Some(libc::ENOENT));
      assert_eq!(
        resolve("sh", None, None).ok(),
        Some(PathBuf::from("/bin/sh")),
        "no PATH: /bin:/usr/bin"
      );
      assert_eq!(resolve("./x", Some(path), None).ok(), Some(PathBuf::from("./x")));
      // Relative entries are the child's: relative to its cwd.
      let rel = resolve("tool", Some(OsStr::new(".")), Some(&dir)).ok();
      assert_eq!(rel, Some(PathBuf::from("./tool")));
      let _ = std::fs::remove_dir_all(&dir);
    }

    fn run(l: &Launch<'_>, spawn: bool) -> (String, i32) {
      let child = launch_with(l, spawn).expect("launch");
      let mut out = String::new();
      let mut pipe = std::fs::File::from(child.stdout.expect("stdout"));
      pipe.read_to_string(&mut out).expect("read");
      let mut status = 0;
      // SAFETY: waits for our own child.
      unsafe { libc::waitpid(child.pid as libc::pid_t, &mut status, 0) };
      (out, status)
    }

    #[test]
    fn children_start_clean_spawned_or_forked() {
      // A descriptor without close-on-exec, and an ignored signal, in this process.
      let (r, _w) = pipe().expect("pipe");
      // SAFETY: clears FD_CLOEXEC on our own descriptor; SIG_IGN for SIGXFSZ in this process.
      unsafe {
        libc::fcntl(r.as_raw_fd(), libc::F_SETFD, 0);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
      }
      let leaked = r.as_raw_fd();
      let src = format!(
        "[ -e /proc/self/fd/{leaked} ] && echo leaked; grep -E '^Sig(Ign|Blk)' /proc/self/status; pwd; echo \"$0\"; ps -o pgid= -p $$"
      );
      let args = ["-c".to_string(), src];
      let env = [("PATH".to_string(), Some("/usr/bin:/bin".to_string()))];
      let dir = tmp("clean");
      let cwd = dir.to_str().expect("utf-8 temp dir");
      for spawn in [true, false] {
        let l = Launch {
          program: "sh",
          args: &args,
          cwd: Some(cwd),
          env: &env,
          inherit_env: false,
          stdin: Io::Null,
          stdout: Io::Pipe,
          stderr: Io::Null,
        };
        let (out, status) = run(&l, spawn);
        assert_eq!(status, 0, "spawn {spawn}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        let mask = |name: &str| {
          lines
            .iter()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        };
        assert_eq!(mask("SigBlk:"), Some(0), "spawn {spawn}: {out}");
        // Signals 1-31 (bits 0-30): glibc keeps its two internal ones (32, 33) ignored.
        assert_eq!(
          mask("SigIgn:").map(|m| m & 0x7FFF_FFFF),
          Some(0),
          "spawn {spawn}: {out}"
        );
        let real = std::fs::canonicalize(&dir).expect("canonical");
        assert_eq!(lines.get(2).copied(), real.to_str(), "spawn {spawn}: the cwd");
        assert_eq!(
          lines.get(3).copied(),
          Some("sh"),
          "spawn {spawn}: argv[0] is the name given"
        );
        assert!(!out.contains("leaked"), "spawn {spawn}: {out}");
      }
      // SAFETY: restores the default disposition in this process.
      unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_DFL) };
      let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_without_a_shebang_is_not_run_by_a_shell() {
      let dir = tmp("noshebang");
      script(&dir, "tool", "echo ran by a shell\n", 0o755);
      let path = dir.to_str().expect("utf-8").to_string();
      let env = [("PATH".to_string(), Some(path))];
      let l = Launch {
        program: "tool",
        args: &[],
        cwd: None,
        env: &env,
        inherit_env: true,
        stdin: Io::Null,
        stdout: Io::Pipe,
        stderr: Io::Null,
      };
      let err = launch(&l).err().and_then(|e| e.raw_os_error());
      assert_eq!(err, Some(libc::ENOEXEC));
      let _ = std::fs::remove_dir_all(&dir);
    }
  }
}

/// Reaps every command: one thread waits on their pidfds (epoll), or polls `waitpid` for
/// those without one (kernels before 5.3, some sandboxes). It never waits for any other
/// process: Node.js reaps its own children.
#[cfg(target_os = "linux")]
mod reaper {
  use std::collections::HashMap;
  use std::io;
  use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
  use std::os::unix::process::ExitStatusExt;
  use std::process::ExitStatus;
  use std::sync::{Mutex, MutexGuard};
  use std::time::Duration;

  use tokio::sync::oneshot;

  /// How often processes without a pidfd are checked.
  const POLL: Duration = Duration::from_millis(20);
  /// The epoll token of the wake-up eventfd.
  const WAKE: u64 = 0;

  struct Entry {
    pid: libc::pid_t,
    /// In the epoll set; `None`: polled.
    pidfd: Option<OwnedFd>,
    tx: oneshot::Sender<io::Result<ExitStatus>>,
  }

  #[derive(Default)]
  struct Waiting {
    entries: HashMap<u64, Entry>,
    polled: usize,
    next: u64,
  }

  pub(super) struct Reaper {
    epoll: OwnedFd,
    wake: OwnedFd,
    waiting: Mutex<Waiting>,
  }

  static REAPER: Mutex<Option<&'static Reaper>> = Mutex::new(None);

  /// The reaper, started on first use. An error (no descriptors or thread to spare) is not
  /// kept: the next command tries again.
  pub(super) fn start() -> io::Result<&'static Reaper> {
    let mut slot = REAPER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = *slot {
      return Ok(r);
    }
    // SAFETY: plain syscalls; results checked before use.
    let (epoll, wake) = unsafe {
      let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
      if ep < 0 {
        return Err(io::Error::last_os_error());
      }
      let ep = OwnedFd::from_raw_fd(ep);
      let ev = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
      if ev < 0 {
        return Err(io::Error::last_os_error());
      }
      (ep, OwnedFd::from_raw_fd(ev))
    };
    let mut event = libc::epoll_event {
      events: libc::EPOLLIN as u32,
      u64: WAKE,
    };
    // SAFETY: both descriptors are open; the event is read during the call only.
    if unsafe {
      libc::epoll_ctl(
        epoll.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        wake.as_raw_fd(),
        &mut event,
      )
    } != 0
    {
      return Err(io::Error::last_os_error());
    }
    let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
      epoll,
      wake,
      waiting: Mutex::new(Waiting {
        next: WAKE + 1,
        ..Waiting::default()
      }),
    }));
    std::thread::Builder::new()
      .name("bmad-bg-reaper".into())
      .stack_size(256 * 1024)
      .spawn(move || reaper.run())?;
    *slot = Some(reaper);
    Ok(reaper)
  }

  fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes two integers; its descriptor is close-on-exec.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = libc::c_int::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: a new descriptor owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
  }

  /// The exit of `pid`, when it has exited (it is reaped then).
  fn try_reap(pid: libc::pid_t) -> Option<io::Result<ExitStatus>> {
    loop {
      let mut status = 0;
      // SAFETY: waitpid on one pid we started and nobody else waits for.
      let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
      if r == pid {
        return Some(Ok(ExitStatus::from_raw(status)));
      }
      if r == 0 {
        return None;
      }
      let err = io::Error::last_os_error();
      if err.kind() != io::ErrorKind::Interrupted {
        return Some(Err(err));
      }
    }
  }

  impl Reaper {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
      self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves with the exit of `pid`, a child of this process that nobody else reaps.
    pub(super) fn watch(&self, pid: u32) -> oneshot::Receiver<io::Result<ExitStatus>> {
      let (tx, rx) = oneshot::channel();
      let Ok(pid) = libc::pid_t::try_from(pid) else {
        let _ = tx.send(Err(io::Error::from_raw_os_error(libc::ESRCH)));
        return rx;
      };
      let pidfd = pidfd_open(pid);
      let mut w = self.waiting();
      let token = w.next;
      w.next += 1;
      let pidfd = pidfd.filter(|fd| self.arm(fd, token, libc::EPOLL_CTL_ADD));
      let polled = pidfd.is_none();
      w.entries.insert(token, Entry { pid, pidfd, tx });
      if polled {
        w.polled += 1;
        drop(w);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes to our eventfd (the thread then polls on a timer).
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
      }
      rx
    }

    /// Adds (or re-arms) `pidfd` in the epoll set, for one readiness report.
    fn arm(&self, pidfd: &OwnedFd, token: u64, op: libc::c_int) -> bool {
      let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: token,
      };
      // SAFETY: both descriptors are open; the event is read during the call only.
      unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, pidfd.as_raw_fd(), &mut event) == 0 }
    }

    fn run(&self) {
      let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
      loop {
        let timeout = if self.waiting().polled > 0 {
          POLL.as_millis() as libc::c_int
        } else {
          -1
        };
        // SAFETY: the buffer holds 64 events.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, timeout) };
        if n < 0 {
          if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            std::thread::sleep(POLL); // never a busy loop
          }
          continue;
        }
        let mut due: Vec<u64> = Vec::new();
        for ev in &events[..n as usize] {
          let token = ev.u64;
          if token == WAKE {
            let mut buf = [0u8; 8];
            // SAFETY: reads 8 bytes from our non-blocking eventfd into the buffer.
            unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
          } else {
            due.push(token);
          }
        }
        let mut w = self.waiting();
        if w.polled > 0 {
          due.extend(
            w.entries
              .iter()
              .filter(|(_, e)| e.pidfd.is_none())
              .map(|(t, _)| *t),
          );
        }
        for token in due {
          let Some(entry) = w.entries.get(&token) else {
            continue;
          };
          let Some(result) = try_reap(entry.pid) else {
            // Reported ready but not exited (it should not happen): wait for the next report.
            if let Some(fd) = &entry.pidfd {
              self.arm(fd, token, libc::EPOLL_CTL_MOD);
            }
            continue;
          };
          if let Some(entry) = w.entries.remove(&token) {
            if entry.pidfd.is_none() {
              w.polled -= 1;
            }
            // Closing the pidfd takes it out of the epoll set.
            let _ = entry.tx.send(result);
          }
        }
      }
    }
  }
}

// ----- process groups in /proc ----------------------------------------------------------------

/// The fields of a `/proc/<pid>/stat` line after the command name, state first. The name may
/// hold any bytes (the kernel cuts it at 15, which can split a UTF-8 character), spaces and
/// parentheses included: everything up to the last `)` is skipped.
#[cfg(target_os = "linux")]
fn stat_fields(stat: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
  let close = stat.iter().rposition(|&b| b == b')')?;
  Some(
    stat[close + 1..]
      .split(u8::is_ascii_whitespace)
      .filter(|f| !f.is_empty()),
  )
}

#[cfg(target_os = "linux")]
fn number(field: &[u8]) -> Option<u64> {
  std::str::from_utf8(field).ok()?.parse().ok()
}

/// Every process group that has a member that is not a zombie, from one pass over `/proc`.
#[cfg(target_os = "linux")]
fn live_groups() -> Option<std::collections::HashSet<u32>> {
  use std::io::Read;
  let entries = std::fs::read_dir("/proc").ok()?;
  let mut live = std::collections::HashSet::new();
  let mut buf = Vec::with_capacity(1024);
  for entry in entries.flatten() {
    let name = entry.file_name();
    let Some(pid) = name
      .to_str()
      .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    else {
      continue;
    };
    buf.clear();
    let Ok(mut file) = std::fs::File::open(format!("/proc/{pid}/stat")) else {
      continue; // ended meanwhile
    };
    if file.read_to_end(&mut buf).is_err() {
      continue;
    }
    let Some(mut fields) = stat_fields(&buf) else {
      continue;
    };
    // Fields after the name: state (3), ppid (4), pgrp (5).
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(number).and_then(|g| u32::try_from(g).ok());
    if let (Some(state), Some(pgrp)) = (state, pgrp) {
      if state != b"Z" {
        live.insert(pgrp);
      }
    }
  }
  #[cfg(test)]
  SCANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
  Some(live)
}

#[cfg(all(test, target_os = "linux"))]
static SCANS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The latest `/proc` scan: when it started, and the groups it found alive.
#[cfg(target_os = "linux")]
struct Scan {
  started: Instant,
  live: std::collections::HashSet<u32>,
}

/// One scan serves every group being waited for: the lock is held while a scan runs, and a
/// caller that finds a recent enough scan done uses it.
#[cfg(target_os = "linux")]
fn last_scan() -> &'static tokio::sync::Mutex<Option<Scan>> {
  static LAST: std::sync::OnceLock<tokio::sync::Mutex<Option<Scan>>> = std::sync::OnceLock::new();
  LAST.get_or_init(|| tokio::sync::Mutex::new(None))
}

/// Whether the group has a member that is not a zombie. A zombie is dead but keeps the group
/// "signallable" until someone reaps it, and in a container whose PID 1 does not reap
/// orphans (or where Node.js is PID 1) that may be never: waiting for it would hold every
/// such command for its whole grace period.
///
/// The answer comes from `kill(-pgid, 0)` (no group: false) and, if the group exists, from a
/// `/proc` scan started at `not_before` or later: a scan serves every group waited for at the
/// time, so many lingering groups cost one scan, not one each. It runs on the blocking pool:
/// the runtime's one worker also drives every executor's timers and every command's pipes.
#[cfg(target_os = "linux")]
pub(super) async fn group_alive(pgid: u32, not_before: Instant) -> bool {
  if !signal_group(pgid, 0) {
    return false;
  }
  let mut last = last_scan().lock().await;
  if let Some(scan) = last.as_ref().filter(|s| s.started >= not_before) {
    return scan.live.contains(&pgid);
  }
  let started = Instant::now();
  let Some(live) = tokio::task::spawn_blocking(live_groups).await.ok().flatten() else {
    return true; // unknown: alive until its SIGKILL
  };
  let alive = live.contains(&pgid);
  *last = Some(Scan { started, live });
  alive
}

#[cfg(not(target_os = "linux"))]
pub(super) async fn group_alive(pgid: u32, _not_before: std::time::Instant) -> bool {
  signal_group(pgid, 0)
}

/// CPU ticks (user + system) and resident bytes of the tree under `pid`, from `/proc`.
#[cfg(target_os = "linux")]
pub(super) fn tree_usage(pid: u32) -> Option<(u64, u64)> {
  let page = sys::page_size();
  let pids = crate::system::probes::proc_tree(pid)?;
  let mut ticks = 0u64;
  let mut rss = 0u64;
  for p in pids {
    let Ok(stat) = std::fs::read(format!("/proc/{p}/stat")) else {
      continue;
    };
    let Some(fields) = stat_fields(&stat) else {
      continue;
    };
    let fields: Vec<&[u8]> = fields.collect();
    // fields[0] is field 3 (state): utime = 14, stime = 15, cutime = 16, cstime = 17 (its
    // reaped children: a tree of short-lived processes, like a test runner's, shows up
    // there), rss = 24.
    let get = |n: usize| fields.get(n - 3).and_then(|f| number(f)).unwrap_or(0);
    ticks += get(14) + get(15) + get(16) + get(17);
    rss += get(24) * page;
  }
  Some((ticks, rss))
}

#[cfg(not(target_os = "linux"))]
pub(super) fn tree_usage(_pid: u32) -> Option<(u64, u64)> {
  None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
  use super::*;
  use std::os::unix::process::CommandExt;
  use std::sync::atomic::Ordering;
  use std::time::Duration;

  /// A process group leader whose name (as the kernel keeps it: 15 bytes) is not UTF-8.
  fn badly_named_leader() -> (std::process::Child, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
      "bmad-bg-name-{}-{:?}",
      std::process::id(),
      std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // Nine 2-byte characters: cut at 15 bytes, the eighth is split.
    let link = dir.join("ééééééééé");
    std::os::unix::fs::symlink("/bin/sleep", &link).expect("symlink");
    let mut cmd = std::process::Command::new(&link);
    cmd.arg("30").process_group(0);
    (cmd.spawn().expect("spawn"), dir)
  }

  #[test]
  fn a_name_that_is_not_utf8_does_not_hide_a_process() {
    let (mut child, dir) = badly_named_leader();
    std::thread::sleep(Duration::from_millis(50));
    let stat = std::fs::read(format!("/proc/{}/stat", child.id())).expect("stat");
    assert!(
      std::str::from_utf8(&stat).is_err(),
      "the name is cut inside a character"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .expect("rt");
    assert!(rt.block_on(group_alive(child.id(), Instant::now())), "seen alive");
    let usage = tree_usage(child.id()).expect("usage");
    assert!(usage.1 > 0, "its memory counts");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
  }

  #[test]
  fn many_groups_waited_for_at_once_share_scans() {
    let mut leaders: Vec<std::process::Child> = (0..20)
      .map(|_| {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30").process_group(0);
        cmd.spawn().expect("sleep")
      })
      .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
      .worker_threads(1)
      .enable_all()
      .build()
      .expect("rt");
    let before = SCANS.load(Ordering::Relaxed);
    let since = Instant::now();
    let alive = rt.block_on(async {
      let checks: Vec<_> = leaders
        .iter()
        .map(|c| tokio::spawn(group_alive(c.id(), since)))
        .collect();
      let mut all = true;
      for c in checks {
        all &= c.await.unwrap_or(false);
      }
      all
    });
    let scans = SCANS.load(Ordering::Relaxed) - before;
    for c in &mut leaders {
      let _ = c.kill();
      let _ = c.wait();
    }
    assert!(alive);
    // Other tests scan at the same time; 20 groups alone would be 20 scans.
    assert!(scans <= 6, "{scans} scans for 20 groups");
  }
}
