//! Files and directories that only their owner may read.
//!
//! Private keys, the SDK's MLS state and the hub's store must never be
//! readable by other users of the machine, not even for the moment between
//! creating a file and narrowing its mode. So files are created with mode
//! 0600 and directories with 0700 from the start (the process's umask can
//! only narrow these further), and a file or directory that already existed
//! with a wider mode is narrowed. The hub, the SDK and `certs dev` share these
//! helpers so that the rule is written once. On platforms without Unix modes
//! they fall back to the plain operations.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

/// The mode of an owner-only file.
pub const FILE_MODE: u32 = 0o600;
/// The mode of an owner-only directory.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parents with mode 0700, and narrows `dir`
/// itself to 0700 if it already existed (its existing parents are left as
/// they are: they may be shared directories such as `/tmp`).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)?;
    narrow(dir, DIR_MODE)
}

/// Creates (or truncates) `path` for writing with mode 0600; an existing file
/// is narrowed to 0600 before anything is written to it.
pub fn create_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if file.metadata()?.permissions().mode() & 0o777 != FILE_MODE {
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        }
    }
    Ok(file)
}

/// Writes `bytes` to `path` as an owner-only file (see [`create_file`]).
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create_file(path)?.write_all(bytes)
}

/// Narrows an existing file to 0600 (one that an older version left wider).
pub fn restrict_file(path: &Path) -> io::Result<()> {
    narrow(path, FILE_MODE)
}

/// Narrows everything under `dir`, and `dir` itself, to owner-only: for
/// directories that a library fills with files of its own making.
pub fn narrow_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            narrow_tree(&entry.path())?;
        } else {
            narrow(&entry.path(), FILE_MODE)?;
        }
    }
    narrow(dir, DIR_MODE)
}

#[cfg(unix)]
fn narrow(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if fs::symlink_metadata(path)?.permissions().mode() & 0o777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn narrow(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// The permission bits of `path` (for tests and checks); 0 where there are none.
pub fn mode_of(path: &Path) -> io::Result<u32> {
    let metadata = fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Ok(metadata.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        Ok(0)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn new_and_existing_files_and_directories_end_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode_of(&dir).unwrap(), DIR_MODE);
        assert_eq!(mode_of(&root.path().join("a")).unwrap(), DIR_MODE);

        let wide = root.path().join("wide");
        fs::create_dir(&wide).unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&wide).unwrap();
        assert_eq!(mode_of(&wide).unwrap(), DIR_MODE);

        let file = dir.join("secret");
        write_file(&file, b"one").unwrap();
        assert_eq!(mode_of(&file).unwrap(), FILE_MODE);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&file, b"two").unwrap();
        assert_eq!(mode_of(&file).unwrap(), FILE_MODE);
        assert_eq!(fs::read(&file).unwrap(), b"two");

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        narrow_tree(root.path()).unwrap();
        assert_eq!(mode_of(&file).unwrap(), FILE_MODE);
        assert_eq!(mode_of(&dir).unwrap(), DIR_MODE);
    }
}
