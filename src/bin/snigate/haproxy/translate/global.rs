//! The `global` section: `crt-base` / `ca-base` (where relative certificate paths are), the TLS
//! options every `bind` starts from (`ssl-default-bind-options`), the process-wide `maxconn` and
//! `hard-stop-after`.

use super::super::lexer::Line;
use super::super::sections::{Kind, Section};
use super::translator::Translator;

/// What `global` gives the rest of the translation.
#[derive(Default)]
pub(super) struct Global {
    /// `ssl-default-bind-options`: words every ssl `bind` starts with.
    pub(super) bind_options: Vec<String>,
    pub(super) bind_options_line: usize,
    /// Process-wide connection cap.
    pub(super) maxconn: Option<usize>,
    /// `hard-stop-after`: how long a stopping HAProxy waits for sessions (`limits.drain_timeout`).
    pub(super) hard_stop_after: Option<String>,
}

impl Translator {
    /// Reads every `global` section (later lines win).
    pub(super) fn global(&mut self, sections: &[Section]) -> Global {
        let mut global = Global::default();
        for section in sections.iter().filter(|s| s.kind == Kind::Global) {
            self.report_untranslated(Kind::Global, &section.body);
            for line in &section.body {
                self.global_line(line, &mut global);
            }
        }
        global
    }

    fn global_line(&mut self, line: &Line, global: &mut Global) {
        match (line.keyword(), line.args()) {
            ("crt-base", [dir]) => self.crt_base = Some(dir.clone()),
            ("ca-base", [dir]) => self.ca_base = Some(dir.clone()),
            ("crt-base" | "ca-base", _) => self.error(line.number, format!("`{}` takes one directory", line.keyword())),
            ("ssl-default-bind-options", options) => {
                global.bind_options = options.to_vec();
                global.bind_options_line = line.number;
            }
            ("maxconn", _) => global.maxconn = self.count(line),
            ("hard-stop-after", _) => global.hard_stop_after = self.duration(line, 1),
            _ => {}
        }
    }

    /// The number in `keyword N`, or an error.
    pub(super) fn count(&mut self, line: &Line) -> Option<usize> {
        match line.args() {
            [n] => match n.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    self.error(line.number, format!("`{}` needs a number above 0", line.keyword()));
                    None
                }
            },
            _ => {
                self.error(line.number, format!("`{}` takes one number", line.keyword()));
                None
            }
        }
    }
}
