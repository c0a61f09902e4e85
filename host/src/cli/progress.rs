//! How far a job has come, shown on stderr: a bar (bytes, rate, ETA) when the operator
//! watches a terminal, a plain line now and then when the output goes to a file or a pipe,
//! nothing with `--json`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// At most one plain progress line this often: enough to see a job move in a log without
/// a line for every event (the daemon sends two a second).
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The bar's look: what it is about, the bar (as wide as the terminal allows), bytes done
/// of total, rate, time left.
const BAR_TEMPLATE: &str =
    "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// How many characters of the id the bar shows (a uuid's first group), so that the bar
/// fits an 80-column terminal.
const BAR_ID_CHARS: usize = 8;

/// The bar's look while the total is not known yet.
const SPINNER_TEMPLATE: &str = "{msg} {spinner} {binary_bytes} {binary_bytes_per_sec}";

/// A job's progress display.
pub struct Progress {
    /// What the job is, e.g. `backup 0b5e…`.
    label: String,
    /// How it is drawn.
    style: Style,
}

enum Style {
    /// On a terminal.
    Bar(ProgressBar),
    /// To a file or a pipe; when the last line went out.
    Lines(Option<Instant>),
    /// `--json`: scripts read only the result.
    Silent,
}

impl Progress {
    /// A display for the job `what` (`backup`, `restore`, `verify`) of `id`: silent for
    /// `json`, a bar when stdout and stderr are both a terminal, else plain lines.
    pub fn new(what: &str, id: &str, json: bool) -> Self {
        let label = format!("{what} {id}");
        let style = if json {
            Style::Silent
        } else if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template(SPINNER_TEMPLATE).expect("a template"));
            let short: String = id.chars().take(BAR_ID_CHARS).collect();
            bar.set_message(format!("{what} {short}"));
            Style::Bar(bar)
        } else {
            Style::Lines(None)
        };
        Self { label, style }
    }

    /// `done` bytes of `total` (when known).
    pub fn update(&mut self, done: u64, total: Option<u64>) {
        match &mut self.style {
            Style::Bar(bar) => {
                if let Some(total) = total.filter(|t| *t > 0) {
                    if bar.length() != Some(total) {
                        bar.set_style(
                            ProgressStyle::with_template(BAR_TEMPLATE)
                                .expect("a template")
                                .progress_chars("=> "),
                        );
                        bar.set_length(total);
                    }
                }
                bar.set_position(done);
            }
            Style::Lines(last) => {
                if last.is_some_and(|at| at.elapsed() < LINE_EVERY) {
                    return;
                }
                *last = Some(Instant::now());
                match total.filter(|t| *t > 0) {
                    Some(total) => eprintln!(
                        "{}: {} of {} ({}%)",
                        self.label,
                        HumanBytes(done),
                        HumanBytes(total),
                        done.saturating_mul(100) / total
                    ),
                    None => eprintln!("{}: {}", self.label, HumanBytes(done)),
                }
            }
            Style::Silent => {}
        }
    }

    /// Removes the bar, if any, before the result is printed.
    pub fn finish(&self) {
        if let Style::Bar(bar) = &self.style {
            bar.finish_and_clear();
        }
    }
}
