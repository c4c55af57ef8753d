//! Progress bars on stderr, only when stderr is a terminal and not `-q`.

use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, ReadBuf};

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A byte-progress bar, or `None` when nobody is watching.
pub fn bar(len: u64, msg: &str) -> Option<ProgressBar> {
    if quiet() || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    Some(pb)
}

/// Counts bytes through a reader into an optional bar.
pub struct Tracked<T> {
    pub inner: T,
    pub bar: Option<ProgressBar>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(b) = &self.bar {
            b.inc((buf.filled().len() - before) as u64);
        }
        r
    }
}

/// Status line on stderr unless quiet.
pub fn note(msg: impl AsRef<str>) {
    if !quiet() {
        eprintln!("{}", msg.as_ref());
    }
}

/// A per-item progress line: only when stderr is a terminal (logs get the summary).
pub fn tick(msg: impl AsRef<str>) {
    if !quiet() && std::io::stderr().is_terminal() {
        eprintln!("{}", msg.as_ref());
    }
}

/// `s` with control characters (ESC, newlines, …) escaped, for printing text that came
/// from untrusted input (archive entry names, registry errors, signature layers): it can
/// neither move the cursor nor fake a second log line.
pub fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// [`escape`] line by line: the line breaks of a multi-line message stay, every other
/// control character is escaped.
pub fn escape_lines(s: &str) -> String {
    s.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}
