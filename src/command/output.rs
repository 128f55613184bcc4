//! A command's output: each stream is read to the end and kept up to a cap; lines are split
//! only when someone wants them (progress, `command-output`) and sent in batches.
//!
//! Kept bytes become [`Text`] off the JS thread: Latin-1 or UTF-16, the two forms a JS string
//! is made from with a plain copy. Invalid UTF-8 becomes U+FFFD (3 bytes for 1), so the text
//! is cut again at the cap: whatever the bytes, no stream brings more than `cap` bytes of
//! UTF-8 to JS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

use super::{Event, ProgressMode, Stream, MAX_LINE_BYTES};

const READ_CHUNK: usize = 64 * 1024;
/// Once told to stop, a reader still takes what the pipe holds: whatever is readable without
/// waiting, and what arrives within `AFTER_STOP_WAIT` of the stop, up to the most a pipe can
/// hold (Linux's default `pipe-max-size`). A process outside the command's group that keeps
/// writing is cut there.
const AFTER_STOP_BYTES: usize = 1024 * 1024;
const AFTER_STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
/// Lines per [`Event::Lines`], so one chatty read does not make one huge JS array.
const LINES_PER_EVENT: usize = 256;

/// Text for a JS string: Latin-1 while every character is at most U+00FF, else UTF-16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
  Latin1(Vec<u8>),
  Utf16(Vec<u16>),
}

impl Default for Text {
  fn default() -> Self {
    Text::Latin1(Vec::new())
  }
}

impl Text {
  /// Bytes the JS string takes: one per character for Latin-1, two for UTF-16.
  pub fn heap_bytes(&self) -> usize {
    match self {
      Text::Latin1(b) => b.len(),
      Text::Utf16(u) => u.len() * 2,
    }
  }

  /// Lossy UTF-8 decoding of `bytes`, cut where its UTF-8 form would pass `max_utf8` bytes.
  /// With `cut_tail` (the bytes were cut from a longer stream) an incomplete character at the
  /// end is dropped whole instead of becoming U+FFFD. Also returns whether the text was cut.
  pub fn decode(bytes: Vec<u8>, max_utf8: usize, cut_tail: bool) -> (Text, bool) {
    if bytes.len() <= max_utf8 && bytes.is_ascii() {
      return (Text::Latin1(bytes), false);
    }
    let mut out = Builder::default();
    let mut utf8_len = 0usize;
    let mut cut = false;
    let mut chunks = bytes.utf8_chunks().peekable();
    'chunks: while let Some(chunk) = chunks.next() {
      let valid = chunk.valid();
      if utf8_len + valid.len() <= max_utf8 {
        utf8_len += valid.len();
        out.push_str(valid);
      } else {
        for c in valid.chars() {
          utf8_len += c.len_utf8();
          if utf8_len > max_utf8 {
            cut = true;
            break 'chunks;
          }
          out.push(c);
        }
      }
      let invalid = chunk.invalid();
      if invalid.is_empty() {
        continue;
      }
      let incomplete_tail = chunks.peek().is_none()
        && std::str::from_utf8(invalid)
          .err()
          .is_some_and(|e| e.error_len().is_none());
      if cut_tail && incomplete_tail {
        break;
      }
      utf8_len += char::REPLACEMENT_CHARACTER.len_utf8();
      if utf8_len > max_utf8 {
        cut = true;
        break;
      }
      out.push(char::REPLACEMENT_CHARACTER);
    }
    (out.finish(), cut)
  }
}

impl std::fmt::Display for Text {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match self {
      Text::Latin1(b) => b.iter().try_for_each(|&c| write!(f, "{}", char::from(c))),
      Text::Utf16(u) => char::decode_utf16(u.iter().copied())
        .try_for_each(|c| write!(f, "{}", c.unwrap_or(char::REPLACEMENT_CHARACTER))),
    }
  }
}

/// Builds a [`Text`], switching from Latin-1 to UTF-16 at the first character above U+00FF.
#[derive(Default)]
struct Builder {
  latin1: Vec<u8>,
  utf16: Option<Vec<u16>>,
}

impl Builder {
  fn push(&mut self, c: char) {
    if let Some(u) = self.utf16.as_mut() {
      let mut buf = [0u16; 2];
      u.extend_from_slice(c.encode_utf16(&mut buf));
      return;
    }
    match u8::try_from(u32::from(c)) {
      Ok(b) => self.latin1.push(b),
      Err(_) => {
        let mut u: Vec<u16> = Vec::with_capacity(self.latin1.len() + 1024);
        u.extend(self.latin1.iter().map(|&b| u16::from(b)));
        self.latin1 = Vec::new();
        self.utf16 = Some(u);
        self.push(c);
      }
    }
  }

  fn push_str(&mut self, s: &str) {
    match self.utf16.as_mut() {
      Some(u) => u.extend(s.encode_utf16()),
      None if s.is_ascii() => self.latin1.extend_from_slice(s.as_bytes()),
      None => s.chars().for_each(|c| self.push(c)),
    }
  }

  fn finish(self) -> Text {
    match self.utf16 {
      Some(u) => Text::Utf16(u),
      None => Text::Latin1(self.latin1),
    }
  }
}

/// What one stream kept.
#[derive(Debug, Default)]
pub(super) struct Capture {
  kept: Vec<u8>,
  pub(super) total: u64,
}

impl Capture {
  fn truncated(&self) -> bool {
    self.total > self.kept.len() as u64
  }

  /// The kept bytes as text of at most `cap` UTF-8 bytes, and whether the stream was cut
  /// (by the cap on bytes read, or on text). A character cut by the cap is dropped whole.
  pub(super) fn into_text(self, cap: usize) -> (Text, bool) {
    let truncated = self.truncated();
    let (text, cut) = Text::decode(self.kept, cap, truncated);
    (text, truncated || cut)
  }

  fn copy(&self) -> Capture {
    Capture {
      kept: self.kept.clone(),
      total: self.total,
    }
  }
}

/// The captures of a command's two streams, shared by their readers and by whoever wants
/// what they kept so far (a cancelled command's error).
#[derive(Debug, Default)]
pub(super) struct Captures {
  stdout: Mutex<Capture>,
  stderr: Mutex<Capture>,
}

impl Captures {
  fn of(&self, stream: Stream) -> MutexGuard<'_, Capture> {
    let m = match stream {
      Stream::Stdout => &self.stdout,
      Stream::Stderr => &self.stderr,
    };
    // A panic elsewhere cannot leave a Capture half-written: take it as it is.
    m.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// A copy of what `stream` kept so far.
  pub(super) fn copy(&self, stream: Stream) -> Capture {
    self.of(stream).copy()
  }
}

pub(super) struct Reader {
  pub(super) handle: u32,
  pub(super) stream: Stream,
  pub(super) cap: usize,
  pub(super) captures: Arc<Captures>,
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
      self.lines.push(line_text(bytes));
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

/// A line as text (invalid UTF-8 replaced), at most `MAX_LINE_BYTES` bytes of UTF-8.
fn line_text(bytes: &[u8]) -> String {
  let mut s = String::from_utf8_lossy(bytes).into_owned();
  if s.len() > MAX_LINE_BYTES {
    let mut end = MAX_LINE_BYTES;
    while !s.is_char_boundary(end) {
      end -= 1;
    }
    s.truncate(end);
  }
  s
}

/// Reads `source` to the end (or until `stop` and what the pipe held then), keeping up to the
/// cap in the reader's capture.
pub(super) async fn read_stream<R: AsyncRead + Unpin>(source: Option<R>, mut r: Reader) {
  let Some(mut source) = source else {
    return;
  };
  let mut chunk = vec![0u8; READ_CHUNK];
  let mut partial: Vec<u8> = Vec::new();
  let mut partial_overflow = false;
  let mut after_cr = false;
  let mut mid_line = false;
  let mut after_stop = 0usize;
  let mut stopped_at: Option<tokio::time::Instant> = None;
  loop {
    let n = if *r.stop.borrow() {
      // Bytes the command wrote before its group ended are still read: a reader held up by
      // a slow listener must not lose the end of the output. A read that is ready is taken
      // even past the deadline (the timeout looks at it first); none is waited for then.
      if after_stop >= AFTER_STOP_BYTES {
        break;
      }
      let deadline = *stopped_at.get_or_insert_with(|| tokio::time::Instant::now() + AFTER_STOP_WAIT);
      match tokio::time::timeout_at(deadline, source.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
          after_stop += n;
          n
        }
        _ => break,
      }
    } else {
      // Data first: a stop seen while the pipe has some goes through the branch above.
      tokio::select! {
        biased;
        read = source.read(&mut chunk) => match read {
          Ok(0) | Err(_) => break,
          Ok(n) => n,
        },
        changed = r.stop.changed() => {
          if changed.is_err() {
            break;
          }
          continue;
        }
      }
    };
    let data = &chunk[..n];
    {
      let mut cap = r.captures.of(r.stream);
      cap.total += n as u64;
      if cap.kept.len() < r.cap {
        let take = (r.cap - cap.kept.len()).min(n);
        cap.kept.extend_from_slice(&data[..take]);
      }
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
  use std::time::Duration;

  fn text(bytes: &[u8], max: usize, cut_tail: bool) -> (String, bool) {
    let (t, cut) = Text::decode(bytes.to_vec(), max, cut_tail);
    (t.to_string(), cut)
  }

  /// Reads `source` with `stop` already sent; the bytes captured, and how long it took.
  fn read_stopped<R: AsyncRead + Unpin + Send + 'static>(
    rt: &tokio::runtime::Runtime,
    source: R,
  ) -> (u64, Duration) {
    let captures = Arc::new(Captures::default());
    let (events, _rx) = mpsc::channel(8);
    let (stop_tx, stop) = watch::channel(false);
    stop_tx.send(true).expect("a receiver");
    let reader = Reader {
      handle: 1,
      stream: Stream::Stdout,
      cap: 64 << 20,
      captures: Arc::clone(&captures),
      progress: ProgressMode::Off,
      forward: Arc::new(AtomicBool::new(false)),
      events,
      stop,
      lines: Vec::new(),
      progress_value: None,
    };
    let started = std::time::Instant::now();
    rt.block_on(read_stream(Some(source), reader));
    let total = captures.of(Stream::Stdout).total;
    (total, started.elapsed())
  }

  fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .expect("runtime")
  }

  #[test]
  fn a_stopped_reader_still_takes_what_the_pipe_holds() {
    // A pipe still open (held by a process outside the group), with 200 KiB in it.
    let rt = rt();
    let (mut writer, pipe) = tokio::io::duplex(256 * 1024);
    rt.block_on(async {
      use tokio::io::AsyncWriteExt;
      writer.write_all(&vec![b'x'; 200 * 1024]).await.expect("write");
    });
    let (total, took) = read_stopped(&rt, pipe);
    assert_eq!(total, 200 * 1024, "every byte in the pipe");
    assert!(
      took < Duration::from_secs(1),
      "not held by the open pipe: {took:?}"
    );
    drop(writer);
  }

  #[test]
  fn a_stopped_reader_is_held_neither_by_a_slow_writer_nor_by_a_flood() {
    use tokio::io::AsyncWriteExt;
    let rt = rt();
    // A few hundred bytes every millisecond: the reader stops soon after the stop.
    let (mut writer, pipe) = tokio::io::duplex(64 * 1024);
    let slow = rt.spawn(async move {
      loop {
        if writer.write_all(&[b'y'; 300]).await.is_err() {
          return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
      }
    });
    let (total, took) = read_stopped(&rt, pipe);
    assert!(
      took < Duration::from_millis(500),
      "slow writer: {took:?} ({total} bytes)"
    );
    slow.abort();
    // As fast as it can: cut at about a pipe's worth.
    let (mut writer, pipe) = tokio::io::duplex(64 * 1024);
    let flood = rt.spawn(async move {
      while writer.write_all(&[b'z'; 4096]).await.is_ok() {
        tokio::task::yield_now().await;
      }
    });
    let (total, took) = read_stopped(&rt, pipe);
    assert!(
      total <= (AFTER_STOP_BYTES + READ_CHUNK) as u64,
      "flood: {total} bytes"
    );
    assert!(took < Duration::from_secs(2), "flood: {took:?}");
    flood.abort();
  }

  #[test]
  fn cut_multibyte_character_is_dropped_whole() {
    let c = Capture {
      kept: "aé".as_bytes()[..2].to_vec(),
      total: 3,
    };
    let (t, truncated) = c.into_text(2);
    assert_eq!(t.to_string(), "a");
    assert!(truncated);
  }

  #[test]
  fn ascii_and_latin1_stay_one_byte_per_character() {
    assert_eq!(
      Text::decode(b"abc".to_vec(), 10, false),
      (Text::Latin1(b"abc".to_vec()), false)
    );
    // é (U+00E9) fits Latin-1; € (U+20AC) does not.
    assert_eq!(
      Text::decode("aé".as_bytes().to_vec(), 10, false),
      (Text::Latin1(vec![b'a', 0xE9]), false)
    );
    let (t, _) = Text::decode("é€".as_bytes().to_vec(), 10, false);
    assert_eq!(t, Text::Utf16(vec![0xE9, 0x20AC]));
    assert_eq!(t.heap_bytes(), 4);
    let (t, _) = Text::decode("a😀".as_bytes().to_vec(), 10, false);
    assert_eq!(t.to_string(), "a😀");
  }

  #[test]
  fn invalid_bytes_are_replaced_and_the_text_stays_within_the_cap() {
    assert_eq!(text(b"a\xffb", 10, false), ("a\u{FFFD}b".into(), false));
    // Each 0xFF becomes 3 bytes of UTF-8: 10 of them, cap 10, leave room for 3.
    let (s, cut) = text(&[0xFF; 10], 10, false);
    assert_eq!(s, "\u{FFFD}".repeat(3));
    assert!(cut);
    assert!(s.len() <= 10);
    // Text longer than the cap is cut at a character boundary, ASCII or not.
    assert_eq!(text(b"abcdef", 4, false), ("abcd".into(), true));
    assert_eq!(text("éé€€".as_bytes(), 9, false), ("éé€".into(), true));
    assert_eq!(text(b"a\xe2\x82\xac\xffz", 100, false).0, "a€\u{FFFD}z");
    // An incomplete character at the end: replaced, unless the stream was cut there.
    assert_eq!(text(b"a\xc3", 10, false), ("a\u{FFFD}".into(), false));
    assert_eq!(text(b"a\xc3", 10, true), ("a".into(), false));
    assert_eq!(text(b"\xffa\xc3", 10, true), ("\u{FFFD}a".into(), false));
  }

  #[test]
  fn lines_are_capped_after_replacement() {
    let line = line_text(&vec![0xFF; MAX_LINE_BYTES]);
    assert!(line.len() <= MAX_LINE_BYTES);
    assert!(line.len() > MAX_LINE_BYTES - 3);
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
