//! A command's output: each stream is read to the end and kept up to a cap; lines are split
//! only when someone wants them (progress, `command-output`) and sent in batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

use super::{Event, ProgressMode, Stream, MAX_LINE_BYTES};

const READ_CHUNK: usize = 64 * 1024;
/// Lines per [`Event::Lines`], so one chatty read does not make one huge JS array.
const LINES_PER_EVENT: usize = 256;

/// What one stream kept.
#[derive(Debug, Default)]
pub(super) struct Capture {
  kept: Vec<u8>,
  pub(super) total: u64,
}

impl Capture {
  pub(super) fn truncated(&self) -> bool {
    self.total > self.kept.len() as u64
  }

  /// UTF-8 text (invalid sequences replaced); a character cut by the cap is dropped whole.
  pub(super) fn into_string(mut self) -> String {
    if self.truncated() {
      if let Err(e) = std::str::from_utf8(&self.kept) {
        if e.error_len().is_none() {
          self.kept.truncate(e.valid_up_to());
        }
      }
    }
    match String::from_utf8(self.kept) {
      Ok(s) => s,
      Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
  }
}

pub(super) struct Reader {
  pub(super) handle: u32,
  pub(super) stream: Stream,
  pub(super) cap: usize,
  pub(super) progress: ProgressMode,
  pub(super) forward: Arc<AtomicBool>,
  /// Bounded: when JS falls behind, sending waits, reading stops, and the child blocks on
  /// its full pipe, instead of events piling up in memory.
  pub(super) events: mpsc::Sender<Event>,
  pub(super) stop: watch::Receiver<bool>,
  pub(super) lines: Vec<String>,
  /// The latest JSON-lines progress value not sent yet (only the latest matters).
  pub(super) progress_value: Option<f64>,
}

impl Reader {
  fn wants_lines(&self) -> bool {
    self.progress != ProgressMode::Off || self.forward.load(Ordering::Relaxed)
  }

  /// One complete line: JSON progress is parsed here; the line itself goes to JS when
  /// progress matching or `command-output` wants it. True when a batch is full.
  fn line(&mut self, bytes: &[u8]) -> bool {
    if self.progress == ProgressMode::JsonLines {
      if let Some(value) = json_progress(bytes) {
        self.progress_value = Some(value);
      }
    }
    if self.progress == ProgressMode::Lines || self.forward.load(Ordering::Relaxed) {
      self.lines.push(String::from_utf8_lossy(bytes).into_owned());
    }
    self.lines.len() >= LINES_PER_EVENT
  }

  async fn flush(&mut self) {
    if !self.lines.is_empty() {
      let lines = std::mem::take(&mut self.lines);
      let ev = Event::Lines {
        handle: self.handle,
        stream: self.stream,
        lines,
      };
      let _ = self.events.send(ev).await;
    }
    if let Some(value) = self.progress_value.take() {
      let _ = self
        .events
        .send(Event::Progress {
          handle: self.handle,
          value,
        })
        .await;
    }
  }
}

pub(super) async fn read_stream<R: AsyncRead + Unpin>(source: Option<R>, mut r: Reader) -> Capture {
  let mut cap = Capture::default();
  let Some(mut source) = source else {
    return cap;
  };
  let mut chunk = vec![0u8; READ_CHUNK];
  let mut partial: Vec<u8> = Vec::new();
  let mut partial_overflow = false;
  let mut after_cr = false;
  let mut mid_line = false;
  loop {
    let n = tokio::select! {
      read = source.read(&mut chunk) => match read {
        Ok(0) | Err(_) => break,
        Ok(n) => n,
      },
      _ = r.stop.changed() => break,
    };
    let data = &chunk[..n];
    cap.total += n as u64;
    if cap.kept.len() < r.cap {
      let take = (r.cap - cap.kept.len()).min(n);
      cap.kept.extend_from_slice(&data[..take]);
    }
    if !r.wants_lines() {
      partial.clear();
      partial_overflow = false;
      after_cr = false;
      // If lines are wanted from the next read on, its bytes up to the first line end are
      // the tail of a line nobody saw the start of: they are skipped, not sent as a line.
      mid_line = !matches!(data.last(), Some(b'\n' | b'\r'));
      continue;
    }
    let mut rest = data;
    if mid_line {
      match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(pos) => {
          mid_line = false;
          after_cr = rest[pos] == b'\r';
          rest = &rest[pos + 1..];
        }
        None => continue,
      }
    }
    if after_cr && rest.first() == Some(&b'\n') {
      rest = &rest[1..]; // the \n of a \r\n split between two reads
    }
    after_cr = false;
    // Lines end at \n, \r\n, or a lone \r (progress bars redraw their line with \r).
    while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
      let (head, tail) = rest.split_at(pos);
      let full = if partial.is_empty() && !partial_overflow {
        r.line(&head[..head.len().min(MAX_LINE_BYTES)])
      } else {
        append_capped(&mut partial, head, &mut partial_overflow);
        let full = r.line(&partial);
        partial.clear();
        partial_overflow = false;
        full
      };
      if full {
        r.flush().await;
      }
      rest = match tail {
        [b'\r', b'\n', more @ ..] => more,
        [b'\r'] => {
          after_cr = true;
          &[]
        }
        [_, more @ ..] => more,
        [] => &[],
      };
    }
    append_capped(&mut partial, rest, &mut partial_overflow);
    r.flush().await;
  }
  if (!partial.is_empty() || partial_overflow) && r.wants_lines() {
    r.line(&partial);
  }
  r.flush().await;
  cap
}

fn append_capped(partial: &mut Vec<u8>, bytes: &[u8], overflow: &mut bool) {
  let room = MAX_LINE_BYTES.saturating_sub(partial.len());
  if bytes.len() > room {
    *overflow = true;
  }
  partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// `{"progress": n}` (other fields allowed) -> n.
pub fn json_progress(line: &[u8]) -> Option<f64> {
  let trimmed = line.trim_ascii();
  if !trimmed.starts_with(b"{") || !trimmed.windows(10).any(|w| w == b"\"progress\"") {
    return None;
  }
  let value: serde_json::Value = serde_json::from_slice(trimmed).ok()?;
  value.get("progress")?.as_f64().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn cut_multibyte_character_is_dropped_whole() {
    let c = Capture {
      kept: "aé".as_bytes()[..2].to_vec(),
      total: 3,
    };
    assert_eq!(c.into_string(), "a");
  }

  #[test]
  fn json_progress_lines() {
    assert_eq!(json_progress(br#"{"progress": 42.5}"#), Some(42.5));
    assert_eq!(json_progress(br#"  {"step":"x","progress":7}  "#), Some(7.0));
    assert_eq!(json_progress(br#"{"progress": "7"}"#), None);
    assert_eq!(json_progress(b"progress 7"), None);
    assert_eq!(json_progress(br#"{"progress": 7"#), None);
  }
}
