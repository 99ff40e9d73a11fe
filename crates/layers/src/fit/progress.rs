//! `fit`'s output: an `indicatif` bar with ETA and running metrics on a
//! terminal, one line per epoch otherwise (no `\r` redraws into files).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Logs, Verbose};

pub(crate) struct Progress<'a> {
    verbose: Verbose,
    out: Option<Box<dyn Write + 'a>>,
    terminal: bool,
    epochs: usize,
    bar: Option<ProgressBar>,
    steps: usize,
    done: usize,
    start: Instant,
}

impl<'a> Progress<'a> {
    pub fn new(verbose: Verbose, out: Option<Box<dyn Write + 'a>>, epochs: usize) -> Self {
        let terminal = out.is_none() && std::io::stdout().is_terminal();
        Progress {
            verbose,
            out,
            terminal,
            epochs,
            bar: None,
            steps: 0,
            done: 0,
            start: Instant::now(),
        }
    }

    fn line(&mut self, text: &str) {
        match &mut self.out {
            // progress output is best effort: a closed pipe must not end training
            Some(w) => {
                let _ = writeln!(w, "{text}");
            }
            None => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{text}");
            }
        }
    }

    pub fn epoch_begin(&mut self, epoch: usize, steps: usize) {
        self.steps = steps;
        self.done = 0;
        self.start = Instant::now();
        if self.verbose == Verbose::Bar && self.terminal {
            self.line(&format!("Epoch {}/{}", epoch + 1, self.epochs));
            let bar =
                ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stdout());
            let style =
                ProgressStyle::with_template("{pos:>5}/{len:5} [{bar:30.}] - ETA: {eta} - {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=>.");
            bar.set_style(style);
            self.bar = Some(bar);
        }
    }

    pub fn batch_end(&mut self, done: usize, logs: &Logs) {
        self.done = done;
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
            bar.set_message(logs.summary());
        }
    }

    pub fn epoch_end(&mut self, epoch: usize, logs: &Logs) {
        if self.verbose == Verbose::Silent {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64();
        let per_step = 1e3 * secs / self.done.max(1) as f64;
        let stats = format!(
            "{}/{} - {secs:.2}s {per_step:.1}ms/step - {}",
            self.done,
            self.steps,
            logs.summary()
        );
        match self.bar.take() {
            Some(bar) => {
                bar.finish_and_clear();
                self.line(&format!("[{}] {stats}", "=".repeat(30)));
            }
            None => self.line(&format!("Epoch {}/{} - {stats}", epoch + 1, self.epochs)),
        }
    }
}
