//! File-system reads and writes shared by the studio, the CLI, the layout and the pipeline: the one
//! home of the atomic-save rule, so that every file Glichen writes (layouts, settings, autosave,
//! PNGs, latents) gets the same crash guarantee, and of the bounded read, so that no input path
//! (`/dev/zero`, a FIFO, a folder, a huge file) can hang the process or exhaust its memory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to a temporary file in the target's folder, flushes it to disk and renames it
/// over `path`, so that a crash or a full disk leaves the old file or the new one, never half of
/// one. A missing folder is an error (see [`write_atomic_creating_folder`]). The temporary name starts with a dot and carries the
/// process id and a counter so that concurrent saves never collide; it is removed on failure.
///
/// Only regular files are replaced. A symbolic link is followed and its target replaced (the
/// link stays a link); a character device (`/dev/null`, `/dev/stdout` on a terminal) or a FIFO
/// with a reader is written through, because renaming over it would replace the device node or
/// pipe with a file; a FIFO without a reader and anything else (a folder, a socket) is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = &match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) => target,
            // A dangling link: create its target, as a plain write would.
            Err(_) => path
                .parent()
                .unwrap_or(Path::new("."))
                .join(std::fs::read_link(path)?),
        },
        _ => path.to_path_buf(),
    };
    if let Ok(meta) = std::fs::metadata(path) {
        let kind = meta.file_type();
        if kind.is_dir() {
            return Err(invalid(format!(
                "{} is a folder, not a file",
                path.display()
            )));
        }
        if !kind.is_file() {
            return write_through(path, &kind, bytes);
        }
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| invalid(format!("{} is not a file path", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        // Keep the permissions of the file being replaced (a rename would otherwise reset them
        // to the umask default).
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = file.set_permissions(meta.permissions());
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Persist the rename itself; not possible (nor needed) everywhere.
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a whole regular file of at most `limit` bytes. Folders, devices and FIFOs are refused
/// (reading `/dev/zero` never ends, opening a FIFO waits for a writer), as are larger files, with
/// the size and the limit in the message; the read itself is bounded too, so a file that grows
/// while it is read cannot pass the limit.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(invalid(format!(
            "{} is a folder, not a file",
            path.display()
        )));
    }
    if !kind.is_file() {
        return Err(invalid(format!(
            "{} is not a regular file (a device, pipe or socket); only files are read",
            path.display()
        )));
    }
    let too_large = |len: u64| {
        invalid(format!(
            "{} is {len} bytes, more than the {limit} bytes accepted here",
            path.display()
        ))
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_limited`] for UTF-8 text.
pub fn read_text_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_limited(path, limit)?).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text: {e}", path.display()),
        )
    })
}

/// [`write_atomic`], creating the folder first: for the app's own files (settings, autosave) and
/// the CLI's outputs, whose folders are Glichen's to make, unlike a folder the user saves into.
pub fn write_atomic_creating_folder(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    write_atomic(path, bytes)
}

/// Whether files can be made in `dir` (created when missing): a probe file is written, synced
/// and removed. Permission bits alone do not tell (root ignores them; a read-only mount, a full
/// disk or a quota do not show in them), so this tries what a save will do.
pub fn check_writable_folder(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".glichen-write-probe-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(b"probe")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&probe);
    written.and(removed)
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// Writes into an existing device or pipe in place (see [`write_atomic`]).
fn write_through(path: &Path, kind: &std::fs::FileType, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        if kind.is_char_device() || kind.is_fifo() {
            // Non-blocking open: a FIFO nobody reads fails at once (ENXIO) instead of hanging.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::ENXIO) {
                        invalid(format!("{} is a pipe with no reader", path.display()))
                    } else {
                        e
                    }
                })?;
            set_blocking(&file)?;
            let mut file = file;
            return file.write_all(bytes).and_then(|()| file.flush());
        }
    }
    let _ = bytes;
    Err(invalid(format!(
        "{} is not a regular file ({kind:?}); refusing to replace it",
        path.display()
    )))
}

#[cfg(unix)]
fn set_blocking(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function's caller owns; only the O_NONBLOCK bit changes.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Moves a file that could not be read out of the way, beside its old name with the moment it
/// was set aside (`settings.json.broken-20261203-083012`, UTC), so that the next write of that
/// name cannot destroy what the user may still want. Returns where it went.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = utc_stamp(std::time::SystemTime::now());
    let mut target = path.with_file_name(format!("{name}.broken-{stamp}"));
    let mut n = 1;
    while target.symlink_metadata().is_ok() {
        n += 1;
        target = path.with_file_name(format!("{name}.broken-{stamp}-{n}"));
    }
    std::fs::rename(path, &target)?;
    Ok(target)
}

/// `YYYYMMDD-HHMMSS` in UTC. Hand-written (Howard Hinnant's days-to-civil algorithm) rather than
/// a date crate for one file name.
fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("glichen-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("a.json");
        assert!(write_atomic(&path, b"one").is_err(), "no folder, no file");
        write_atomic_creating_folder(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("glichen-fsio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_folder_is_refused_and_left_without_a_temporary() {
        let dir = temp_dir("folder");
        let err = write_atomic(&dir, b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("is a folder"), "{err}");
        let parent = dir.parent().unwrap();
        let leftovers = std::fs::read_dir(parent)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(".glichen-fsio-folder") && name.ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bounded_reads_refuse_devices_folders_and_large_files() {
        let dir = temp_dir("read");
        let err = read_limited(&dir, 10).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
        if Path::new("/dev/zero").exists() {
            let err = read_limited(Path::new("/dev/zero"), 10).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        let file = dir.join("f.txt");
        std::fs::write(&file, b"0123456789a").unwrap();
        let err = read_limited(&file, 10).unwrap_err();
        assert!(
            err.to_string()
                .contains("is 11 bytes, more than the 10 bytes"),
            "{err}"
        );
        assert_eq!(read_limited(&file, 11).unwrap(), b"0123456789a");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_as_input_without_waiting_for_a_writer() {
        let dir = temp_dir("fifo-in");
        let fifo = dir.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_limited(&fifo, 10).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_keeps_being_a_link_to_the_new_content() {
        let dir = temp_dir("symlink");
        let target = dir.join("real.json");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_through_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let null = Path::new("/dev/null");
        if !null.exists() {
            return;
        }
        write_atomic(null, b"bytes").unwrap();
        assert!(std::fs::metadata(null)
            .unwrap()
            .file_type()
            .is_char_device());
        let full = Path::new("/dev/full");
        if full.exists() {
            let err = write_atomic(full, b"bytes").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
            assert!(std::fs::metadata(full)
                .unwrap()
                .file_type()
                .is_char_device());
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_pipe_without_a_reader_is_refused_at_once_and_one_with_a_reader_gets_the_bytes() {
        use std::os::unix::fs::FileTypeExt;
        let dir = temp_dir("fifo");
        let fifo = dir.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = write_atomic(&fifo, b"x").unwrap_err();
        assert!(err.to_string().contains("no reader"), "{err}");
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(&fifo).unwrap())
        };
        // The reader opens the FIFO in its own time; retry until it is there.
        let mut written = false;
        for _ in 0..200 {
            if write_atomic(&fifo, b"through the pipe").is_ok() {
                written = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(written);
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn utc_stamps_read_as_dates() {
        let at = |secs| utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "19700101-000000");
        assert_eq!(at(951_782_400), "20000229-000000");
        assert_eq!(at(1_796_286_612), "20261203-083012");
    }

    #[test]
    fn set_aside_keeps_the_file_under_a_new_name() {
        let dir = temp_dir("set-aside");
        let path = dir.join("settings.json");
        std::fs::write(&path, b"{broken").unwrap();
        let first = set_aside(&path).unwrap();
        std::fs::write(&path, b"{broken again").unwrap();
        let second = set_aside(&path).unwrap();
        assert!(!path.exists());
        assert_ne!(first, second);
        assert_eq!(std::fs::read(&first).unwrap(), b"{broken");
        assert_eq!(std::fs::read(&second).unwrap(), b"{broken again");
        let name = first.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("settings.json.broken-"), "{name}");
    }
}
