//! Replacing an output directory in one step: the crate is written into a sibling temporary
//! directory (`.<name>.cnnc-tmp-<pid>`) and renamed into place, so a write that fails or is
//! interrupted never leaves a half-written crate: the directory is at every moment either its
//! old self or the complete new crate. An old directory is first renamed aside
//! (`.<name>.cnnc-old-<pid>`), then deleted once the new one is in place.
//!
//! Entries of the old directory that the new crate must keep (a `target/` from building it,
//! `Cargo.lock`, the user's own files: the caller lists them) are moved into the new one just
//! before the swap, and back if the swap fails.

use std::io;
use std::path::{Path, PathBuf};

/// A temporary sibling of the output directory: removed on drop unless committed, with any
/// parent directories it had to create.
pub struct Staging {
    /// The output directory, absolute (symbolic links resolved when it exists).
    dir: PathBuf,
    tmp: PathBuf,
    /// The outermost parent directory created for it, removed again on failure.
    created: Option<PathBuf>,
    committed: bool,
}

/// `.<name>.cnnc-<what>-<pid>` beside `dir`, with a counter when that name is taken.
fn sibling(dir: &Path, what: &str) -> io::Result<PathBuf> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(io::Error::other(
            "not a directory that can be replaced (name a directory)",
        ));
    };
    let base = format!(".{}.cnnc-{what}-{}", name.to_string_lossy(), std::process::id());
    let mut path = parent.join(&base);
    let mut n = 1;
    while path.symlink_metadata().is_ok() {
        path = parent.join(format!("{base}-{n}"));
        n += 1;
    }
    Ok(path)
}

impl Staging {
    /// Creates the temporary directory next to `dir`, creating `dir`'s missing parents.
    pub fn new(dir: &Path) -> io::Result<Staging> {
        let dir = match dir.canonicalize() {
            Ok(d) => d,
            Err(_) => std::path::absolute(dir)?,
        };
        let parent = dir.parent().unwrap_or(&dir);
        if let Some(file) = parent.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir()) {
            return Err(io::Error::other(format!("{} is not a directory", file.display())));
        }
        let created = parent
            .ancestors()
            .take_while(|a| !a.exists())
            .last()
            .map(Path::to_path_buf);
        let mut staging = Staging {
            tmp: PathBuf::new(),
            dir,
            created,
            committed: false,
        };
        let parent = staging.dir.parent().unwrap_or(&staging.dir);
        let cannot = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot create a directory in {}: {e}", parent.display()),
            )
        };
        std::fs::create_dir_all(parent).map_err(cannot)?;
        let tmp = sibling(&staging.dir, "tmp")?;
        std::fs::create_dir(&tmp).map_err(cannot)?;
        staging.tmp = tmp;
        Ok(staging)
    }

    /// Where to write the new contents.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Moves `keep` (paths relative to the old directory, if there is one) into the new
    /// contents, then puts them in place of the old directory and deletes it. On an error
    /// before the swap, the old directory is as it was.
    pub fn commit(mut self, keep: &[PathBuf]) -> io::Result<()> {
        if !self.dir.exists() {
            std::fs::rename(&self.tmp, &self.dir)?;
            self.committed = true;
            return Ok(());
        }
        let mut moved = Vec::new();
        let res = self.carry(keep, &mut moved);
        let res = res.and_then(|()| self.swap());
        if res.is_err() {
            for rel in moved.iter().rev() {
                let _ = std::fs::rename(self.tmp.join(rel), self.dir.join(rel));
            }
        }
        let aside = res?;
        self.committed = true;
        std::fs::remove_dir_all(&aside).map_err(|e| {
            io::Error::other(format!(
                "the new crate is in place, but the old one ({}) could not be removed: {e}",
                aside.display()
            ))
        })
    }

    /// Moves each of `keep` from the old directory into the new contents, recording it in `moved`.
    fn carry(&self, keep: &[PathBuf], moved: &mut Vec<PathBuf>) -> io::Result<()> {
        for rel in keep {
            let dst = self.tmp.join(rel);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(self.dir.join(rel), &dst)?;
            moved.push(rel.clone());
        }
        Ok(())
    }

    /// Renames the old directory aside and the new one into its place; returns where the old
    /// one is now. On failure the old one is put back.
    fn swap(&self) -> io::Result<PathBuf> {
        let aside = sibling(&self.dir, "old")?;
        std::fs::rename(&self.dir, &aside)?;
        if let Err(e) = std::fs::rename(&self.tmp, &self.dir) {
            std::fs::rename(&aside, &self.dir)?;
            return Err(e);
        }
        Ok(aside)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            if !self.tmp.as_os_str().is_empty() {
                let _ = std::fs::remove_dir_all(&self.tmp);
            }
            if let Some(c) = &self.created {
                let _ = std::fs::remove_dir_all(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_a_missing_directory_and_its_parents() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/out");
        let s = Staging::new(&dir).unwrap();
        std::fs::write(s.path().join("f"), "new").unwrap();
        s.commit(&[]).unwrap();
        assert_eq!(names(&dir), ["f"]);
        assert_eq!(names(&root.path().join("a/b")), ["out"]);
    }

    #[test]
    fn replaces_an_old_directory_keeping_what_it_is_told_to() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        std::fs::create_dir_all(dir.join("target/release")).unwrap();
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("old.txt"), "stale").unwrap();
        std::fs::write(dir.join("src/mine.rs"), "user").unwrap();
        std::fs::write(dir.join("target/release/lib"), "built").unwrap();
        let s = Staging::new(&dir).unwrap();
        std::fs::create_dir(s.path().join("src")).unwrap();
        std::fs::write(s.path().join("src/lib.rs"), "new").unwrap();
        s.commit(&["target".into(), "src/mine.rs".into()]).unwrap();
        assert_eq!(names(&dir), ["src", "target"]);
        assert_eq!(names(&dir.join("src")), ["lib.rs", "mine.rs"]);
        assert!(dir.join("target/release/lib").is_file());
        assert_eq!(names(root.path()), ["out"], "no temporary or old directory left");
    }

    #[test]
    fn dropping_uncommitted_leaves_the_old_directory_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), "old").unwrap();
        let s = Staging::new(&dir).unwrap();
        std::fs::write(s.path().join("f"), "half").unwrap();
        drop(s);
        assert_eq!(names(root.path()), ["out"]);
        assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "old");
        // Parents created for a directory never written are removed too.
        drop(Staging::new(&root.path().join("x/y/out")).unwrap());
        assert_eq!(names(root.path()), ["out"]);
    }

    #[test]
    fn a_failed_carry_puts_everything_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep"), "user").unwrap();
        let s = Staging::new(&dir).unwrap();
        let err = s.commit(&["keep".into(), "missing".into()]);
        assert!(err.is_err());
        assert_eq!(names(root.path()), ["out"]);
        assert_eq!(names(&dir), ["keep"]);
    }

    #[test]
    fn refuses_a_path_under_a_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("file"), "").unwrap();
        assert!(Staging::new(&root.path().join("file/out")).is_err());
        assert_eq!(names(root.path()), ["file"]);
    }
}
