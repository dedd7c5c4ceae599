//! Progress while a backup runs: a bar on a terminal, JSON lines with --json, nothing
//! for cron (--quiet, or stderr not a terminal).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn::ops::backup::Progress;

pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    pub fn start(progress: Arc<Progress>, json: bool, quiet: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let thread = (json || (tty && !quiet)).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                if json {
                    json_lines(&progress, &stop)
                } else {
                    bar(&progress, &stop)
                }
            })
        });
        Reporter { stop, thread }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn json_lines(p: &Progress, stop: &AtomicBool) {
    let started = Instant::now();
    let mut next = Instant::now() + Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() < next {
            continue;
        }
        next += Duration::from_secs(1);
        let line = serde_json::json!({
            "message_type": "status",
            "seconds_elapsed": started.elapsed().as_secs(),
            "files_done": p.files.load(Ordering::Relaxed) + p.files_unmodified.load(Ordering::Relaxed),
            "bytes_done": p.bytes_done.load(Ordering::Relaxed),
            "bytes_expected": p.bytes_expected.load(Ordering::Relaxed),
            "bytes_read": p.bytes_read.load(Ordering::Relaxed),
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

fn bar(p: &Progress, stop: &AtomicBool) {
    let expected = p.bytes_expected.load(Ordering::Relaxed);
    let pb = if expected > 0 {
        indicatif::ProgressBar::new(expected).with_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        )
    } else {
        indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} {spinner} {bytes} {bytes_per_sec} {msg}",
            )
            .expect("template"),
        )
    };
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    while !stop.load(Ordering::Relaxed) {
        let done = p.bytes_done.load(Ordering::Relaxed);
        if expected > 0 && done > expected {
            pb.set_length(done);
        }
        pb.set_position(done);
        pb.set_message(format!(
            "{} files ({} unchanged)",
            p.files.load(Ordering::Relaxed) + p.files_unmodified.load(Ordering::Relaxed),
            p.files_unmodified.load(Ordering::Relaxed)
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    pb.finish_and_clear();
}
