//! Tests of command agents: real programs run on a one-worker runtime (output, progress,
//! input and environment, spawn errors, termination of the group, usage).

use super::*;

fn spec(program: &str, args: &[&str]) -> Spec {
  Spec {
    program: program.into(),
    args: args.iter().map(|s| s.to_string()).collect(),
    cwd: None,
    env: Vec::new(),
    inherit_env: true,
    input: None,
    max_output_bytes: 1 << 20,
    kill_signal: libc::SIGTERM,
    kill_grace: Duration::from_millis(300),
    progress: ProgressMode::Off,
  }
}

fn rt() -> tokio::runtime::Runtime {
  tokio::runtime::Builder::new_multi_thread()
    .worker_threads(1)
    .enable_all()
    .build()
    .unwrap()
}

/// Runs `spec` and returns its events, the Exit last.
fn run(rt: &tokio::runtime::Runtime, spec: Spec, forward: bool, kill_after: Option<Duration>) -> Vec<Event> {
  let (tx, mut rx) = mpsc::channel(64);
  let running = spawn(rt.handle(), 7, spec, Arc::new(AtomicBool::new(forward)), tx).unwrap();
  rt.block_on(async move {
    if let Some(d) = kill_after {
      tokio::time::sleep(d).await;
      running.terminate();
    }
    let mut out = Vec::new();
    while let Some(ev) = rx.recv().await {
      let last = matches!(ev, Event::Exit(_));
      out.push(ev);
      if last {
        break;
      }
    }
    out
  })
}

/// Running (not a zombie waiting for a reaper that a container's PID 1 may never be).
fn alive(pid: i32) -> bool {
  std::fs::read_to_string(format!("/proc/{pid}/stat"))
    .map(|s| s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next()) != Some("Z"))
    .unwrap_or(false)
}

fn exit_of(events: &[Event]) -> &Exit {
  match events.last() {
    Some(Event::Exit(e)) => e,
    other => panic!("no exit: {other:?}"),
  }
}

#[test]
fn a_slow_line_listener_still_gets_the_tail_and_every_byte_counted() {
  // The listener (JS) falls behind near the end: when the command exits, what it left in
  // the pipe and the lines queued for JS take longer than the pipe drain's 0.5 s.
  let rt = rt();
  let (tx, mut rx) = mpsc::channel(64);
  let s = spec("seq", &["1", "100000"]);
  let running = spawn(rt.handle(), 7, s, Arc::new(AtomicBool::new(true)), tx).unwrap();
  let (lines, last, exit) = rt.block_on(async move {
    let (mut events, mut lines, mut last) = (0usize, 0usize, String::new());
    loop {
      match rx.recv().await.expect("an exit") {
        Event::Lines { lines: l, .. } => {
          lines += l.len();
          last = l.last().cloned().unwrap_or_default();
          events += 1;
          if events > 300 {
            tokio::time::sleep(Duration::from_millis(20)).await;
          }
        }
        Event::Exit(e) => return (lines, last, e),
        _ => {}
      }
    }
  });
  drop(running);
  assert_eq!(exit.output.stdout_bytes, 588_895, "every byte read");
  assert_eq!(
    (lines, last.as_str()),
    (100_000, "100000"),
    "every line delivered"
  );
}

#[test]
fn the_output_is_still_there_for_a_cancel_that_lands_before_the_exit_is_heard() {
  let rt = rt();
  // JS is behind: the queue is full, so the exit waits to be sent.
  let (tx, mut rx) = mpsc::channel(1);
  tx.try_send(Event::Lines {
    handle: 0,
    stream: Stream::Stdout,
    lines: Vec::new(),
  })
  .expect("room for one");
  let running = spawn(
    rt.handle(),
    7,
    spec("printf", &["hello"]),
    Arc::new(AtomicBool::new(false)),
    tx,
  )
  .unwrap();
  let deadline = std::time::Instant::now() + Duration::from_secs(10);
  while !running.has_exited() {
    assert!(std::time::Instant::now() < deadline, "printf exits");
    std::thread::sleep(Duration::from_millis(5));
  }
  // Time for the exit to decode the output and wait for room in the queue.
  rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
  // What a timeout or cancel at this moment reads for its error.
  assert_eq!(running.output().stdout.to_string(), "hello");
  let exit = rt.block_on(async move {
    loop {
      if let Some(Event::Exit(e)) = rx.recv().await {
        return e;
      }
    }
  });
  assert_eq!(exit.output.stdout.to_string(), "hello");
}

#[test]
fn a_stopped_command_handles_its_kill_signal_at_once() {
  // The command stops itself (as a background job reading the terminal would): the kill
  // signal resumes it, and its handler runs long before the SIGKILL deadline.
  let rt = rt();
  let mut s = spec(
    "sh",
    &["-c", "trap 'echo handled; exit 7' TERM; kill -STOP $$; sleep 30"],
  );
  s.kill_grace = Duration::from_secs(20);
  let t0 = std::time::Instant::now();
  let ev = run(&rt, s, false, Some(Duration::from_millis(300)));
  let e = exit_of(&ev);
  assert!(
    t0.elapsed() < Duration::from_secs(10),
    "ended by its handler, not by SIGKILL: {:?}",
    t0.elapsed()
  );
  assert_eq!((e.exit_code, e.signal), (Some(7), None));
  assert_eq!(e.output.stdout.to_string(), "handled\n");
}

#[test]
fn captures_output_and_exit_code() {
  let rt = rt();
  let ev = run(
    &rt,
    spec("sh", &["-c", "printf 'out\\n'; printf 'err' >&2; exit 3"]),
    false,
    None,
  );
  let e = exit_of(&ev);
  assert_eq!(e.exit_code, Some(3));
  assert_eq!(e.signal, None);
  assert_eq!(e.output.stdout.to_string(), "out\n");
  assert_eq!(e.output.stderr.to_string(), "err");
  assert!(!e.output.truncated);
  assert_eq!(ev.len(), 1, "no lines unless asked for");
}

#[test]
fn caps_output_but_counts_it_all() {
  let rt = rt();
  let mut s = spec("sh", &["-c", "head -c 300000 /dev/zero | tr '\\0' x"]);
  s.max_output_bytes = 1000;
  let e = exit_of(&run(&rt, s, false, None)).clone();
  assert_eq!(e.output.stdout.heap_bytes(), 1000);
  assert_eq!(e.output.stdout_bytes, 300_000);
  assert!(e.output.truncated);
}

#[test]
fn json_progress_and_forwarded_lines() {
  let rt = rt();
  let mut s = spec(
    "sh",
    &["-c", "echo '{\"progress\": 10}'; echo plain; printf 'no-newline'"],
  );
  s.progress = ProgressMode::JsonLines;
  let ev = run(&rt, s, true, None);
  let progress: Vec<f64> = ev
    .iter()
    .filter_map(|e| match e {
      Event::Progress { value, .. } => Some(*value),
      _ => None,
    })
    .collect();
  assert_eq!(progress, vec![10.0]);
  let lines: Vec<String> = ev
    .iter()
    .filter_map(|e| match e {
      Event::Lines {
        stream: Stream::Stdout,
        lines,
        ..
      } => Some(lines.clone()),
      _ => None,
    })
    .flatten()
    .collect();
  assert_eq!(lines, vec!["{\"progress\": 10}", "plain", "no-newline"]);
}

#[test]
fn lines_end_at_lf_crlf_and_lone_cr() {
  let rt = rt();
  let s = spec("sh", &["-c", "printf 'a\\r\\nb\\rc 50%%\\rd\\n\\ne'"]);
  let ev = run(&rt, s, true, None);
  let lines: Vec<String> = ev
    .iter()
    .filter_map(|e| match e {
      Event::Lines { lines, .. } => Some(lines.clone()),
      _ => None,
    })
    .flatten()
    .collect();
  assert_eq!(lines, vec!["a", "b", "c 50%", "d", "", "e"]);
}

#[test]
fn input_env_and_cwd() {
  let rt = rt();
  let mut s = spec(
    "sh",
    &["-c", "read x; echo \"$x $FOO $(pwd)\"; echo ${HOME:-nohome}"],
  );
  s.input = Some(b"hello\n".to_vec());
  s.env = vec![("FOO".into(), Some("bar".into())), ("HOME".into(), None)];
  s.cwd = Some("/tmp".into());
  let e = exit_of(&run(&rt, s, false, None)).clone();
  assert_eq!(e.output.stdout.to_string(), "hello bar /tmp\nnohome\n");
  let mut s = spec("/usr/bin/env", &[]);
  s.inherit_env = false;
  s.env = vec![("ONLY".into(), Some("1".into()))];
  assert_eq!(
    exit_of(&run(&rt, s, false, None)).output.stdout.to_string(),
    "ONLY=1\n"
  );
}

#[test]
fn missing_program_is_a_spawn_error() {
  let rt = rt();
  let (tx, _rx) = mpsc::channel(64);
  let err = spawn(
    rt.handle(),
    1,
    spec("no-such-program-xyz", &[]),
    Arc::new(AtomicBool::new(false)),
    tx,
  )
  .err()
  .map(|e| e.kind());
  assert_eq!(err, Some(io::ErrorKind::NotFound));
}

#[test]
fn terminate_kills_the_group_including_a_grandchild_ignoring_sigterm() {
  let rt = rt();
  // The grandchild ignores SIGTERM and keeps stdout open; only SIGKILL ends it.
  let s = spec(
    "sh",
    &[
      "-c",
      "sh -c 'trap \"\" TERM; while :; do sleep 0.05; done' & echo $!; wait",
    ],
  );
  let t0 = Instant::now();
  let ev = run(&rt, s, false, Some(Duration::from_millis(200)));
  let e = exit_of(&ev);
  let grandchild: i32 = e.output.stdout.to_string().trim().parse().unwrap();
  assert_eq!(e.signal, Some(libc::SIGTERM), "the leader dies of SIGTERM");
  assert!(
    t0.elapsed() >= Duration::from_millis(450),
    "the grandchild held stdout until SIGKILL"
  );
  assert!(!alive(grandchild), "grandchild {grandchild} survived");
}

#[test]
fn stragglers_end_with_their_leader() {
  let rt = rt();
  let s = spec("sh", &["-c", "sleep 30 & echo $!"]);
  let t0 = Instant::now();
  let e = exit_of(&run(&rt, s, false, None)).clone();
  assert_eq!(e.exit_code, Some(0));
  assert!(t0.elapsed() < Duration::from_secs(5));
  let straggler: i32 = e.output.stdout.to_string().trim().parse().unwrap();
  assert!(!alive(straggler), "sleep {straggler} survived");
}

#[test]
fn a_group_seen_ended_is_never_signalled_again() {
  // A stranger: a process group leader we did not start as a command. Its pid stands for a
  // number the kernel handed out again after a command's group ended.
  let mut stranger = std::process::Command::new("sleep");
  stranger.arg("30");
  std::os::unix::process::CommandExt::process_group(&mut stranger, 0);
  let mut stranger = stranger.spawn().unwrap();
  let pid = stranger.id();
  let state = State {
    pid,
    exited: AtomicBool::new(true),
    group_done: AtomicBool::new(true),
    kill_signal: libc::SIGTERM,
    kill_grace: Duration::from_millis(10),
    kill_deadline: Mutex::new(None),
    wake: tokio::sync::Notify::new(),
    last_usage: Mutex::new((0, Instant::now())),
  };
  state.terminate();
  state.kill_group();
  rt().block_on(state.end_group());
  std::thread::sleep(Duration::from_millis(50));
  assert!(alive(pid as i32), "the stranger {pid} was signalled");
  let _ = stranger.kill();
  let _ = stranger.wait();
}

#[test]
fn usage_reports_the_tree() {
  let rt = rt();
  let (tx, _rx) = mpsc::channel(64);
  let running = spawn(
    rt.handle(),
    1,
    spec("sleep", &["2"]),
    Arc::new(AtomicBool::new(false)),
    tx,
  )
  .unwrap();
  std::thread::sleep(Duration::from_millis(100));
  let u = running.usage();
  assert_eq!(u.pid, running.pid());
  if cfg!(target_os = "linux") {
    assert!(u.rss_bytes.unwrap_or(0.0) > 0.0);
    assert!(u.cpu_percent.is_some());
  }
  running.kill_now();
}
