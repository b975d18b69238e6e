//! Terminal progress bars (indicatif) behind the library's `Progress` trait.

use indicatif::{ProgressBar, ProgressStyle};
use vmic_engine::hashing::{NoProgress, Progress};

pub struct Bar {
    bar: ProgressBar,
}

impl Progress for Bar {
    fn begin(&self, total_bytes: u64) {
        self.bar.set_length(total_bytes);
        self.bar.set_position(0);
    }

    fn working_on(&self, name: &str) {
        let short = name.rsplit('/').next().unwrap_or(name);
        self.bar.set_message(short.to_string());
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A bar on stderr when `enabled`, otherwise a silent sink.
pub fn for_terminal(enabled: bool, verb: &str) -> Box<dyn Progress> {
    if !enabled {
        return Box::new(NoProgress);
    }
    let bar = ProgressBar::new(0);
    let template = format!(
        "{verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}} {{wide_msg}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    Box::new(Bar { bar })
}
