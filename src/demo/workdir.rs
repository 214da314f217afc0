//! The demo's temporary directory: configuration, database, socket and the daemon's log live
//! here, and all of it is removed when the guard is dropped (normal end, error, Ctrl-C, panic).

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates a fresh directory under the system's temporary directory (`$TMPDIR`).
    pub fn create() -> anyhow::Result<WorkDir> {
        // Absolute: the daemon's config names paths in it, and a relative one would be taken
        // from the config's own directory.
        let base = std::env::temp_dir();
        let base = std::path::absolute(&base).unwrap_or(base);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let path = base.join(format!(
                "waq-demo-{}-{:x}",
                std::process::id(),
                stamp.wrapping_add(attempt)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    restrict(&path)?;
                    return Ok(WorkDir { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a temporary directory in {}", base.display())
                    })
                }
            }
        }
        anyhow::bail!(
            "cannot create a temporary directory in {}: every name tried exists",
            base.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Only the owner may enter: the directory holds a socket and the demo's secrets.
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("waq demo: could not remove {}: {e}", self.path.display());
            }
        }
    }
}
