//! Atomic file replacement: a reader sees the old content or the new, never
//! a mix, and a crash leaves no half-written file behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{StateError, io};

/// Replaces `path` with `contents`: write a temporary file in the same
/// directory, fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    write_atomic_with(path, mode, |f| f.write_all(contents))
}

/// Like [`write_atomic`], with the content produced by `fill`. If `fill`
/// fails, the temporary file is removed and `path` keeps its old content.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    let written = fill(&mut file)
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io("renaming into place", path)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        &unique[..8]
    ))
}

/// Whether `name` is a temporary file of [`write_atomic`].
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}
