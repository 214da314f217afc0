//! How the demo talks: chapter headings, narrative lines and progress bars on a terminal;
//! plain lines (progress at most once a second) when stdout is a pipe or a file.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Ui {
    live: bool,
    color: bool,
}

impl Ui {
    pub fn new() -> Ui {
        let live =
            std::io::stdout().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let color = live && std::env::var_os("NO_COLOR").is_none();
        Ui { live, color }
    }

    /// Narrative is printed only while no bars are drawing (each chapter draws its bars in a
    /// loop that prints nothing else), so plain lines never collide with them. A closed stdout
    /// stops the demo through its clean-up path (see `demo::run`).
    fn line(&self, text: &str) {
        crate::cli::out::line_or_note(format_args!("{text}"));
    }

    fn styled(&self, sgr: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn title(&self, text: &str) {
        self.line(&self.styled("1", text));
    }

    pub fn chapter(&self, number: usize, title: &str) {
        self.line("");
        self.line(&self.styled("1;36", &format!("{number} · {title}")));
    }

    /// A line of the story.
    pub fn say(&self, text: &str) {
        self.line(&format!("  {text}"));
    }

    /// Something the daemon or Meta answered, quoted.
    pub fn quote(&self, text: &str) {
        self.line(&format!("    {}", self.styled("2", text)));
    }

    /// A claim of the story that just held.
    pub fn ok(&self, text: &str) {
        self.line(&format!("  {} {text}", self.styled("32", "✓")));
    }

    pub fn blank(&self) {
        self.line("");
    }

    /// Progress bars, one per `(label, length)`, drawn until `Bars::finish` (which leaves them
    /// on screen). Nothing else may print while they draw.
    pub fn bars(&self, specs: &[(&str, u64)]) -> Bars {
        let multi = MultiProgress::with_draw_target(if self.live {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        });
        let style = ProgressStyle::with_template(
            "  {prefix:<10} {bar:36.green/white.dim} {pos:>6}/{len:<6} {msg}",
        )
        .map(|s| s.progress_chars("█▉▊▋▌▍▎▏ "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bars = specs
            .iter()
            .map(|(label, len)| {
                let bar = multi.add(ProgressBar::new(*len));
                bar.set_style(style.clone());
                bar.set_prefix(label.to_string());
                bar
            })
            .collect();
        Bars {
            bars,
            _multi: multi,
            live: self.live,
            last_plain: None,
        }
    }
}

pub struct Bars {
    bars: Vec<ProgressBar>,
    _multi: MultiProgress,
    live: bool,
    last_plain: Option<Instant>,
}

impl Bars {
    pub fn set(&self, i: usize, pos: u64, msg: String) {
        if let Some(bar) = self.bars.get(i) {
            bar.set_position(pos);
            bar.set_message(msg);
        }
    }

    /// Without a terminal: prints `line()` at most once a second (`force`: now).
    pub fn plain(&mut self, force: bool, line: impl FnOnce() -> String) {
        if self.live {
            return;
        }
        let due = self
            .last_plain
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if force || due {
            crate::cli::out::line_or_note(format_args!("  {}", line()));
            self.last_plain = Some(Instant::now());
        }
    }

    /// Stops drawing and leaves the bars on screen as they are (`finish` would fill them).
    pub fn finish(self) {
        for bar in &self.bars {
            bar.abandon();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        // Finished, interrupted or failed: stop drawing, keep what was drawn.
        for bar in &self.bars {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn n(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands() {
        assert_eq!(super::n(0), "0");
        assert_eq!(super::n(999), "999");
        assert_eq!(super::n(2000), "2,000");
        assert_eq!(super::n(1234567), "1,234,567");
    }
}
