//! Running the binary under resource limits and a hang detector, observed from outside.
//!
//! A panic, an abort or a hang inside the tool cannot hide from a test that watches the process:
//! the run gets an address-space limit (a runaway allocation then fails inside the tool instead
//! of swapping the machine), optionally a file-size limit (a full disk, with SIGXFSZ ignored so
//! that writes fail with EFBIG as they would with ENOSPC) or the identity of an unprivileged
//! user (so that permission bits apply although the tests run as root), and it is killed if it
//! outlives [`HANG_TIMEOUT`]. The timeout is a hang detector, not a speed target.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a run that has not ended by then; the slowest legitimate run here takes a few seconds.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(20);
/// Address space a run may map: far above what the test inputs need, far below what a size
/// field believed blindly would ask for.
pub const ADDRESS_SPACE: u64 = 1 << 30;
/// The user and group unprivileged runs take (nobody/nogroup).
pub const NOBODY: u32 = 65534;

/// Limits for one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub address_space: u64,
    /// RLIMIT_FSIZE: no file may grow beyond this many bytes.
    pub file_size: Option<u64>,
    /// Run as [`NOBODY`] (only when the tests run as root; otherwise they already are
    /// unprivileged).
    pub unprivileged: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            address_space: ADDRESS_SPACE,
            file_size: None,
            unprivileged: false,
        }
    }
}

/// How a bounded run ended.
#[derive(Debug)]
pub struct Ended {
    /// Exit code; `None` when a signal ended it (an abort, or the hang detector).
    pub code: Option<i32>,
    pub hung: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ended {
    /// The `vxn-blobs: error: ` lines of stderr.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("vxn-blobs: error: "))
            .collect()
    }

    /// Why this run is not a clean failure (exit 1, one error line containing each of
    /// `expected`, no panic), or `None` if it is one.
    pub fn unclean_failure(&self, expected: &[&str]) -> Option<String> {
        let errors = self.error_lines();
        if self.hung {
            Some(format!("still running after {HANG_TIMEOUT:?}; killed"))
        } else if self.stderr.contains("panicked") {
            Some(format!("panicked: {}", self.stderr.trim()))
        } else if self.code != Some(1) {
            Some(format!(
                "ended with {:?} instead of exit code 1: {}",
                self.code,
                self.stderr.trim()
            ))
        } else if errors.len() != 1 || !expected.iter().all(|e| errors[0].contains(e)) {
            Some(format!(
                "expected one error line containing {expected:?}: {}",
                self.stderr.trim()
            ))
        } else {
            None
        }
    }
}

/// Runs `command` to its end under `limits`.
pub fn run(mut command: Command, limits: Limits) -> Ended {
    // Pipes, not files: a file-size limit would also stop the tool's own messages.
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let as_nobody = limits.unprivileged && unsafe { libc::geteuid() } == 0;
    // SAFETY: the hook only makes async-signal-safe system calls and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let set = |resource, value: u64| {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_AS, limits.address_space)?;
            set(libc::RLIMIT_CORE, 0)?;
            if let Some(bytes) = limits.file_size {
                set(libc::RLIMIT_FSIZE, bytes)?;
                // Ignored signals stay ignored across exec: writes then fail with EFBIG.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            }
            if as_nobody
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start vxn-blobs");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG_TIMEOUT {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ended {
        code: status.code(),
        hung,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Reads a pipe to its end on a thread of its own, so that a chatty run never blocks on it.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
