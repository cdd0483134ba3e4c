//! One writer per output directory: an exclusive OS lock (`flock`) on `DIR/.surprisal.lock`,
//! held for the whole run and released by the kernel when the process exits, however it exits
//! (a `kill -9` leaves no stale lock). The file holds the holder's PID so that a second writer can
//! say who is in the way. On Linux, `flock` on NFS is mapped to POSIX byte-range locks by the
//! client, so the lock also holds across nodes that share the directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, RunError};

/// Name of the lock file inside an output directory.
pub const LOCK_FILE: &str = ".surprisal.lock";

/// An exclusive lock on an output directory; released on drop (or process death).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Locks `dir` (which must exist) or fails with [`RunError::Locked`] naming the holder.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let p = dir.join(LOCK_FILE);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(|e| RunError::io(&p, e))?;
        if let Err(e) = try_lock(&f) {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(RunError::io(&p, e));
            }
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            return Err(RunError::Locked {
                dir: dir.to_path_buf(),
                pid: s.trim().parse().ok(),
            });
        }
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.flush()
        };
        write_pid(&mut f).map_err(|e| RunError::io(&p, e))?;
        Ok(DirLock {
            _file: f,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(unix)]
fn try_lock(f: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn try_lock(_f: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let e = DirLock::acquire(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
