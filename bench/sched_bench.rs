// Scheduler-only cost per operation (no napi): W1's pattern (5 interleaved priorities,
// concurrency 64, everything submitted first, then settled in start order).
// cargo run --release --example sched_bench -- 1000000  (ns per submit and per settle, 5 rounds)
use bmad_background_executor::scheduler::{Config, Scheduler};
use std::time::Instant;

fn main() {
  let n: u64 = std::env::args()
    .nth(1)
    .and_then(|s| s.parse().ok())
    .unwrap_or(1_000_000);
  for round in 0..5 {
    let mut s = Scheduler::new(Config {
      max_concurrent: 64,
      ..Config::default()
    });
    let t0 = Instant::now();
    let mut running = std::collections::VecDeque::new();
    for i in 0..n {
      let (id, started) = s.submit(3, 0, false, 5 - (i % 5) as i32, 0.0, 0.0).expect("open");
      if started {
        running.push_back(id);
      }
    }
    let t1 = Instant::now();
    let mut k = 0u64;
    while let Some(id) = running.pop_front() {
      if k.is_multiple_of(512) {
        s.evict(k as f64 * 1e-3);
        s.drain_evicted_into(&mut [0.0; 1024]);
      }
      k += 1;
      if let Some(nx) = s.settle(id, 1, true, k as f64 * 1e-3).next {
        running.push_back(nx);
      }
    }
    let t2 = Instant::now();
    println!(
      "round {round}: submit {:.1} ns/op, settle {:.1} ns/op",
      (t1 - t0).as_nanos() as f64 / n as f64,
      (t2 - t1).as_nanos() as f64 / n as f64
    );
  }
}
