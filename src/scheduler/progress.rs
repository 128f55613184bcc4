//! Progress of running executions, and the periodic updates of watched ones.

use super::{arm, Scheduler, Status, TimerKind};

impl Scheduler {
  /// Records progress reported by a running agent (clamped to 0–100; NaN ignored).
  pub fn set_progress(&mut self, id: u64, percent: f64) -> bool {
    if percent.is_nan() {
      return false;
    }
    match self.execs.get_mut(id) {
      Some(exec) if exec.status == Status::Running => {
        exec.progress = percent.clamp(0.0, 100.0) as f32;
        true
      }
      _ => false,
    }
  }

  /// A watched execution's progress timer fired: re-arms it while the execution is active.
  pub fn progress_tick(&mut self, id: u64, now: f64) -> bool {
    match self.execs.get_mut(id) {
      Some(exec) if !exec.status.is_terminal() && exec.watched() => {
        let at = now + self.cfg.progress_interval_ms;
        arm(&mut self.timer_cmds, exec, id, TimerKind::Progress, at);
        true
      }
      _ => false,
    }
  }
}
