//! A progress line for long work (`export`, `verify`'s exports): one line on stderr,
//! `exporting: 1200/3400 paths, 56.7 MB`, redrawn in place at most every [`INTERVAL`] and
//! erased when the work ends. It is drawn only when stderr is a terminal: scripts, logs and
//! tests see exactly the output they saw without it.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// The least time between two redraws.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// The text of the line: `LABEL: DONE/TOTAL paths, X.Y MB`.
pub fn line(label: &str, done: u64, total: u64, bytes: u64) -> String {
    format!(
        "{label}: {done}/{total} paths, {:.1} MB",
        bytes as f64 / 1e6
    )
}

/// A self-overwriting line on stderr; silent unless stderr is a terminal.
pub struct Progress {
    label: String,
    enabled: bool,
    last: Option<Instant>,
}

impl Progress {
    /// A line labelled `label`, drawn only if `wanted` and stderr is a terminal.
    pub fn on_stderr(label: impl Into<String>, wanted: bool) -> Progress {
        Progress {
            label: label.into(),
            enabled: wanted && io::stderr().is_terminal(),
            last: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Redraws the line if [`INTERVAL`] has passed since the last time, or the work is done.
    pub fn update(&mut self, done: u64, total: u64, bytes: u64) {
        if !self.enabled || !due(self.last, Instant::now(), done >= total) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = io::stderr().lock();
        // \r and erase-to-end: a shorter line leaves nothing of the longer one behind.
        let _ = write!(err, "\r{}\x1b[K", line(&self.label, done, total, bytes));
        let _ = err.flush();
    }

    /// Erases the line (if one was drawn), so what follows starts on a clean line.
    pub fn clear(&mut self) {
        if self.enabled && self.last.take().is_some() {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Whether a redraw is due at `now`.
fn due(last: Option<Instant>, now: Instant, finished: bool) -> bool {
    finished || last.is_none_or(|last| now.duration_since(last) >= INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_paths_and_megabytes() {
        assert_eq!(line("exporting", 0, 0, 0), "exporting: 0/0 paths, 0.0 MB");
        assert_eq!(
            line("exporting", 1200, 3400, 56_749_999),
            "exporting: 1200/3400 paths, 56.7 MB"
        );
    }

    #[test]
    fn redraws_are_throttled_but_the_last_one_is_shown() {
        let start = Instant::now();
        assert!(due(None, start, false), "the first update draws");
        assert!(!due(Some(start), start + INTERVAL / 2, false));
        assert!(due(Some(start), start + INTERVAL, false));
        assert!(
            due(Some(start), start, true),
            "the final count always draws"
        );
    }

    #[test]
    fn not_wanted_is_silent_even_on_a_terminal() {
        let mut progress = Progress::on_stderr("exporting", false);
        assert!(!progress.enabled());
        progress.update(1, 2, 3);
        assert!(progress.last.is_none(), "drew while disabled");
    }
}
