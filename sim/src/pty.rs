//! The GNSS receiver's UART as a real pseudo-terminal.
//!
//! The simulator holds the master side and writes NMEA sentences to it; the
//! slave side is an ordinary tty (`/dev/pts/N`, with an optional stable
//! symlink) that `serialport`, `gpsd` or `cat` can open.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A pseudo-terminal carrying the GNSS receiver's output.
#[derive(Debug)]
pub struct GnssPty {
    master: File,
    slave: OwnedFd,
    slave_path: PathBuf,
    link: Option<PathBuf>,
    dropped: u64,
}

impl GnssPty {
    /// Opens a new pty in raw mode and, if `link` is given, points a symlink at
    /// its slave (replacing a stale link left by an earlier run).
    ///
    /// # Errors
    /// Returns the OS error if no pty can be allocated or the link cannot be made.
    pub fn open(link: Option<&Path>) -> io::Result<Self> {
        let (mut master_fd, mut slave_fd) = (-1, -1);
        // SAFETY: both out-pointers are valid; name, termios and winsize may be null.
        let rc = unsafe {
            libc::openpty(
                &raw mut master_fd,
                &raw mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openpty succeeded, so both descriptors are open and owned by us alone.
        let (master, slave) =
            unsafe { (File::from_raw_fd(master_fd), OwnedFd::from_raw_fd(slave_fd)) };
        make_raw(slave.as_raw_fd())?;
        set_nonblocking(master.as_raw_fd())?;
        let slave_path = tty_name(slave.as_raw_fd())?;
        if let Some(link) = link {
            match std::fs::symlink_metadata(link) {
                Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(link)?,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} exists and is not a symlink; refusing to replace it",
                            link.display()
                        ),
                    ));
                }
                Err(_) => {}
            }
            std::os::unix::fs::symlink(&slave_path, link)?;
        }
        Ok(Self {
            master,
            slave,
            slave_path,
            link: link.map(Path::to_path_buf),
            dropped: 0,
        })
    }

    /// Path of the slave tty (`/dev/pts/N`).
    #[must_use]
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// The stable symlink, if one was requested.
    #[must_use]
    pub fn link(&self) -> Option<&Path> {
        self.link.as_deref()
    }

    /// Sentences dropped because no reader kept up.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes sentences. If the tty buffer is full (nobody reading), the stale
    /// buffered input is discarded so a reader that attaches later sees
    /// current time, and the sentence is counted as dropped.
    pub fn write_sentences(&mut self, sentences: &[String]) {
        for s in sentences {
            match self.master.write_all(s.as_bytes()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.dropped += 1;
                    // SAFETY: the slave fd is open for the lifetime of self.
                    unsafe { libc::tcflush(self.slave.as_raw_fd(), libc::TCIFLUSH) };
                }
                Err(_) => self.dropped += 1,
            }
        }
    }
}

impl Drop for GnssPty {
    fn drop(&mut self) {
        if let Some(link) = &self.link
            && std::fs::read_link(link).ok().as_deref() == Some(self.slave_path.as_path())
        {
            let _ = std::fs::remove_file(link);
        }
    }
}

fn make_raw(fd: i32) -> io::Result<()> {
    // SAFETY: termios is plain data; tcgetattr fills it for a valid tty fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open tty and `t` is writable.
    if unsafe { libc::tcgetattr(fd, &raw mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `t` was initialised by tcgetattr.
    unsafe { libc::cfmakeraw(&raw mut t) };
    // SAFETY: fd is an open tty and `t` is a valid termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw const t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn tty_name(fd: i32) -> io::Result<PathBuf> {
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: buf is writable for its full length, which is passed.
    let rc = unsafe { libc::ttyname_r(fd, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: ttyname_r succeeded and wrote a NUL-terminated string into buf.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(PathBuf::from(name.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    #[test]
    fn sentences_reach_a_reader_of_the_slave() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("gnss0");
        let mut pty = GnssPty::open(Some(&link)).unwrap();
        let reader = File::open(&link).unwrap();
        pty.write_sentences(&[timecard_hw::nmea::frame("GNZDA,120000.00,25,11,2026,00,00")]);
        let mut line = String::new();
        BufReader::new(reader).read_line(&mut line).unwrap();
        assert!(line.starts_with("$GNZDA,120000.00"), "{line:?}");
        drop(pty);
        assert!(!link.exists(), "link removed on drop");
    }

    #[test]
    fn unread_output_is_dropped_not_blocking() {
        let mut pty = GnssPty::open(None).unwrap();
        let s = vec!["$GNTXT,01,01,02,fill*00\r\n".to_string(); 10_000];
        pty.write_sentences(&s);
        assert!(pty.dropped() > 0);
    }
}
