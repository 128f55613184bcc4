//! `posix_spawn` with everything spelled out (Linux). The program is found along the PATH the
//! child gets (never run through `/bin/sh`); the child starts in a process group of its own,
//! with only descriptors 0-2, default signal dispositions and an empty signal mask: nothing
//! of Node.js' own state reaches it. No fork (cheap on the JS thread however large Node.js
//! is), except where `launch` falls back to one.

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
pub(crate) fn child_env(inherit: bool, changes: &[(String, Option<String>)]) -> BTreeMap<OsString, OsString> {
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

/// A posix_spawn object (file actions, attributes), initialised in place by its `init`
/// function and destroyed on drop by its `destroy` function. Boxed: never moved once made.
struct SpawnObject<T> {
  value: Box<MaybeUninit<T>>,
  destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
}

impl<T> SpawnObject<T> {
  fn new(
    init: unsafe extern "C" fn(*mut T) -> libc::c_int,
    destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
  ) -> io::Result<SpawnObject<T>> {
    let mut value = Box::new(MaybeUninit::uninit());
    // SAFETY: `init` is the posix_spawn initialiser for `T`; it initialises the boxed value
    // in place.
    check(unsafe { init(value.as_mut_ptr()) })?;
    Ok(SpawnObject { value, destroy })
  }

  fn ptr(&mut self) -> *mut T {
    self.value.as_mut_ptr()
  }
}

impl<T> Drop for SpawnObject<T> {
  fn drop(&mut self) {
    // SAFETY: initialised in `new` by the initialiser `destroy` belongs to.
    unsafe { (self.destroy)(self.value.as_mut_ptr()) };
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

  let mut actions = SpawnObject::new(
    libc::posix_spawn_file_actions_init,
    libc::posix_spawn_file_actions_destroy,
  )?;
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

  let mut attributes = SpawnObject::new(libc::posix_spawnattr_init, libc::posix_spawnattr_destroy)?;
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
