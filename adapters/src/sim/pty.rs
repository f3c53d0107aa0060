//! A pseudo-terminal standing for a radio's USB serial port.
//!
//! The client opens the slave side by its path (`/dev/pts/N`), like `/dev/ttyUSB0`; the
//! simulator reads and writes the master side through tokio's `AsyncFd`. The slave is set to
//! raw mode (no echo, no line editing, no newline translation) because a serial radio link
//! carries binary frames. The simulator keeps its own slave descriptor open for the pty's
//! whole life: without it, reading the master fails with EIO whenever no client has the
//! slave open, and the pty would be torn down when the first client closes it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{OpenptyResult, openpty};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::unix::AsyncFd;

/// Why a pseudo-terminal could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// A system call failed.
    #[error("{what} failed")]
    Sys {
        /// Which step.
        what: &'static str,
        /// The error number.
        source: nix::Error,
    },
    /// Registering the master with the tokio reactor failed.
    #[error("cannot watch the pseudo-terminal with the tokio reactor")]
    Reactor(#[source] io::Error),
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> PtyError {
    move |source| PtyError::Sys { what, source }
}

/// An open pseudo-terminal: the master for the simulator, the slave path for a client.
#[derive(Debug)]
pub struct Pty {
    /// The master side, non-blocking, watched by the reactor.
    master: AsyncFd<File>,
    /// Our own slave descriptor: keeps the pty alive and master reads free of EIO while no
    /// client has it open. Never read: what the device writes is for the client.
    _slave: OwnedFd,
    /// Where clients open it.
    path: PathBuf,
}

impl Pty {
    /// Opens a pseudo-terminal with a raw slave. Must run inside a tokio runtime.
    pub fn open() -> Result<Pty, PtyError> {
        let OpenptyResult { master, slave } = openpty(None, None).map_err(sys("openpty"))?;
        let mut termios = tcgetattr(&slave).map_err(sys("tcgetattr"))?;
        cfmakeraw(&mut termios);
        tcsetattr(&slave, SetArg::TCSANOW, &termios).map_err(sys("tcsetattr"))?;
        let path = nix::unistd::ttyname(&slave).map_err(sys("ttyname"))?;
        for fd in [&master, &slave] {
            // Child processes (a client started by a test) must not inherit them.
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(sys("fcntl(FD_CLOEXEC)"))?;
        }
        fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(sys("fcntl(O_NONBLOCK)"))?;
        // SAFETY: the `File` owns the master descriptor, which is open and valid, and it stays
        // the same descriptor until the `AsyncFd` (which owns the `File`) is dropped.
        let master = unsafe { AsyncFd::register(File::from(master)) }
            .map_err(|e| PtyError::Reactor(e.into_parts().1))?;
        Ok(Pty {
            master,
            _slave: slave,
            path,
        })
    }

    /// The slave's path, for clients.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what the client wrote.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|inner| {
                let mut file: &File = inner.get_ref();
                file.read(buf)
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf` for the client. Waits while the slave's input buffer is full
    /// (no client reading).
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|inner| {
                let mut file: &File = inner.get_ref();
                file.write(buf)
            }) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_cross_the_pty_both_ways_unchanged() {
        let pty = Pty::open().unwrap();
        let mut client = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(pty.path())
            .unwrap();
        // Bytes a line discipline would mangle: CR, LF, ^C, ^D, 0x94 0xC3.
        let frame = [0x94, 0xc3, 0x00, 0x04, b'\r', b'\n', 0x03, 0x04];
        client.write_all(&frame).unwrap();
        let mut got = Vec::new();
        while got.len() < frame.len() {
            let mut buf = [0u8; 64];
            let n = pty.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, frame);
        pty.write_all(&frame).await.unwrap();
        let mut back = [0u8; 8];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, frame);
    }
}
