//! Where the stack's output goes: every service's stdout and stderr lines to a
//! log file of its own in the state folder (and a short in-memory tail for
//! error messages), and, when a console is attached, to the terminal with a
//! per-service prefix, next to the stack's progress messages.

use std::collections::VecDeque;
use std::fmt::Display;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Result, StackError};
use crate::options::Console;
use crate::service::ServiceName;

/// Lines kept in memory per service for error messages and tests.
const TAIL_LINES: usize = 400;

/// The terminal side of the output; a no-op without a console.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terminal {
    console: Option<Console>,
}

impl Terminal {
    pub(crate) fn new(console: Option<Console>) -> Self {
        Self { console }
    }

    /// A progress message of the stack itself, on stderr.
    pub(crate) fn progress(&self, message: impl Display) {
        if let Some(console) = self.console {
            let mut stderr = std::io::stderr().lock();
            let _ = if console.color {
                writeln!(stderr, "\x1b[1m==>\x1b[0m {message}")
            } else {
                writeln!(stderr, "==> {message}")
            };
        }
    }

    fn service_line(&self, service: ServiceName, name: &str, line: &str) {
        let Some(console) = self.console else {
            return;
        };
        let mut stdout = std::io::stdout().lock();
        // "frontend" is the longest name: prefixes line up.
        let _ = if console.color {
            writeln!(stdout, "\x1b[{}m{name:>8} |\x1b[0m {line}", color(service))
        } else {
            writeln!(stdout, "{name:>8} | {line}")
        };
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.console.is_some()
    }
}

fn color(service: ServiceName) -> &'static str {
    match service {
        ServiceName::Logger => "36",
        ServiceName::Mail => "35",
        ServiceName::Auth => "33",
        ServiceName::Listener => "34",
        ServiceName::Broker => "32",
        ServiceName::Frontend => "96",
    }
}

/// One service's log: a file (truncated when the stack starts) plus a tail.
#[derive(Debug)]
pub(crate) struct ServiceLog {
    service: ServiceName,
    /// The service's name, or `<service>-<n>` for its `n`th instance.
    label: String,
    path: PathBuf,
    file: Mutex<File>,
    tail: Mutex<VecDeque<String>>,
}

impl ServiceLog {
    pub(crate) fn create(service: ServiceName, label: &str, dir: &Path) -> Result<Self> {
        let path = dir.join(format!("{label}.log"));
        let file = File::create(&path)
            .map_err(|e| StackError::io(format!("creating {}", path.display()), e))?;
        Ok(Self {
            service,
            label: label.to_owned(),
            path,
            file: Mutex::new(file),
            tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records a line the service printed (or a note of the stack about it).
    pub(crate) fn line(&self, terminal: &Terminal, line: &str) {
        {
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            // A full disk must not stop the service: its line is just lost.
            let _ = writeln!(file, "{line}");
        }
        {
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
        terminal.service_line(self.service, &self.label, line);
    }

    /// The last `lines` lines (at most the in-memory tail).
    pub(crate) fn tail(&self, lines: usize) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let skip = tail.len().saturating_sub(lines);
        let text: Vec<&str> = tail.iter().skip(skip).map(String::as_str).collect();
        if text.is_empty() {
            "(no output)".to_owned()
        } else {
            text.join("\n")
        }
    }
}
