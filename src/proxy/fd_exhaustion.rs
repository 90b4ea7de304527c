//! Telling descriptor exhaustion apart from a peer's failure: an EMFILE/ENFILE while connecting
//! or relaying is this process's shortage (`local_fd_exhausted`), never the backend's fault.

use std::io;

use rustix::io::Errno;

/// Whether an error means this process (EMFILE) or the system (ENFILE) is out of descriptors.
pub fn is_exhaustion(error: &io::Error) -> bool {
    Errno::from_io_error(error).is_some_and(|errno| errno == Errno::MFILE || errno == Errno::NFILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_exhaustion_is_recognised_and_other_errors_are_not() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(Errno::MFILE.raw_os_error())));
        assert!(is_exhaustion(&io::Error::from_raw_os_error(Errno::NFILE.raw_os_error())));
        assert!(!is_exhaustion(&io::Error::from(io::ErrorKind::ConnectionRefused)));
    }
}
