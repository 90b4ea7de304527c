//! Where log lines go: stderr, but a line that cannot be written is dropped. When the reader of a
//! log pipe exits (`2>&1 | jq` and jq ends) every write fails with EPIPE, and a full disk fails
//! with ENOSPC; neither may panic the task that logged (a panicked signal task leaves the process
//! deaf to SIGTERM) or stop the proxy.

use std::io::{self, Write};

/// A [`tracing_subscriber::fmt::MakeWriter`] for stderr that never returns a write error.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        // One formatted event per call: on error the rest of this line is lost, nothing more.
        let _ = io::stderr().write_all(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderr;

    fn make_writer(&'a self) -> LossyStderr {
        LossyStderr
    }
}
