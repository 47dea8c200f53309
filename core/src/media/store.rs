//! Media files on disk, named by the SHA-256 of their content: identical uploads share one
//! file, a file never changes once written, and its name proves what it holds. Bytes arrive in
//! a temporary file in the same directory tree and are renamed into place only when complete,
//! so a failed or aborted upload leaves nothing behind but, at worst after a crash, a temporary
//! file that the next start removes.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{Error, Result};

/// The media directory: `content/ab/cd/abcd…` for files, `tmp/` for uploads in progress.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

/// A file that reached its place in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub sha256: String,
    pub size: u64,
}

impl FileStore {
    /// Removes temporary files a crash may have left. Directories are made when first needed.
    pub fn open(root: &Path) -> Result<Self> {
        let store = Self { root: root.to_owned() };
        let tmp = store.tmp_dir();
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_error("clearing", &tmp, &e))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the file of a content hash lives. Two levels of fan-out keep directories small.
    pub fn path_of(&self, sha256: &str) -> Result<PathBuf> {
        let valid =
            sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(Error::internal(format!("not a content hash: {sha256:?}")));
        }
        Ok(self.root.join("content").join(&sha256[..2]).join(&sha256[2..4]).join(sha256))
    }

    /// Starts a file of at most `max_size` bytes.
    pub async fn begin(&self, max_size: u64) -> Result<PendingFile> {
        let tmp = self.tmp_dir();
        tokio::fs::create_dir_all(&tmp).await.map_err(|e| io_error("creating", &tmp, &e))?;
        let path = tmp.join(crate::util::random_string(24));
        let file = tokio::fs::File::create_new(&path).await.map_err(|e| io_error("creating", &path, &e))?;
        Ok(PendingFile {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
            max_size,
            store: self.clone(),
        })
    }

    /// Stores bytes already in memory (thumbnails, preview images).
    pub async fn put(&self, bytes: &[u8]) -> Result<StoredFile> {
        let mut pending = self.begin(u64::MAX).await?;
        pending.write(bytes).await?;
        pending.commit().await
    }

    pub async fn open_file(&self, sha256: &str) -> Result<tokio::fs::File> {
        let path = self.path_of(sha256)?;
        tokio::fs::File::open(&path).await.map_err(|e| io_error("opening", &path, &e))
    }

    /// Removes a content file; one already gone is not an error.
    pub async fn remove(&self, sha256: &str) -> Result<()> {
        let path = self.path_of(sha256)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("removing", &path, &e)),
            _ => Ok(()),
        }
    }

    pub async fn read(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.path_of(sha256)?;
        tokio::fs::read(&path).await.map_err(|e| io_error("reading", &path, &e))
    }
}

fn io_error(action: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::internal(format!("{action} {}: {e}", path.display()))
}

/// An upload in progress. Dropped without [`PendingFile::commit`], its temporary file goes away.
#[derive(Debug)]
pub struct PendingFile {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    max_size: u64,
    store: FileStore,
}

impl PendingFile {
    /// Appends a chunk; past the size limit this is 413 `M_TOO_LARGE` (and the caller drops the
    /// file, which deletes it).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        let size = self.size.saturating_add(len);
        if size > self.max_size {
            return Err(Error::too_large(format!(
                "The file is larger than the limit of {} bytes",
                self.max_size
            )));
        }
        let file = self.file.as_mut().ok_or_else(|| Error::internal("write after commit"))?;
        file.write_all(chunk).await.map_err(|e| io_error("writing", &self.path, &e))?;
        self.hasher.update(chunk);
        self.size = size;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Makes the bytes durable and moves them to their content address. When the store already
    /// has the same content, the new copy is dropped instead.
    pub async fn commit(mut self) -> Result<StoredFile> {
        let mut file = self.file.take().ok_or_else(|| Error::internal("commit twice"))?;
        file.flush().await.map_err(|e| io_error("flushing", &self.path, &e))?;
        file.sync_all().await.map_err(|e| io_error("syncing", &self.path, &e))?;
        drop(file);
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let target = self.store.path_of(&sha256)?;
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            tokio::fs::remove_file(&self.path).await.map_err(|e| io_error("removing", &self.path, &e))?;
        } else {
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| io_error("creating", parent, &e))?;
            }
            // Same file system as `tmp/`, so the rename is atomic: readers see all or nothing.
            tokio::fs::rename(&self.path, &target).await.map_err(|e| io_error("renaming", &target, &e))?;
        }
        // Nothing left to delete at drop.
        self.path = PathBuf::new();
        Ok(StoredFile { sha256, size: self.size })
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            // Unlinking an open file is fine on Unix; the descriptor closes right after.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
        }
        out
    }

    fn temp_root() -> PathBuf {
        std::env::temp_dir().join(format!("hearth-store-test-{}", crate::util::random_string(10)))
    }

    #[tokio::test]
    async fn content_is_addressed_by_hash_and_deduplicated() {
        let root = temp_root();
        let store = FileStore::open(&root).unwrap();
        let a = store.put(b"hello").await.unwrap();
        let b = store.put(b"hello").await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(store.read(&a.sha256).await.unwrap(), b"hello");
        assert_eq!(files_under(&root).len(), 1, "one file for two identical uploads");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn oversized_or_dropped_uploads_leave_nothing() {
        let root = temp_root();
        let store = FileStore::open(&root).unwrap();
        let mut pending = store.begin(4).await.unwrap();
        pending.write(b"1234").await.unwrap();
        let err = pending.write(b"5").await.unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::TooLarge);
        drop(pending);
        let pending = store.begin(100).await.unwrap();
        drop(pending);
        assert!(files_under(&root).is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn restart_clears_leftover_temporary_files() {
        let root = temp_root();
        let store = FileStore::open(&root).unwrap();
        let mut pending = store.begin(100).await.unwrap();
        pending.write(b"half").await.unwrap();
        // A crash: the destructor never runs.
        std::mem::forget(pending);
        assert_eq!(files_under(&root).len(), 1);
        FileStore::open(&root).unwrap();
        assert!(files_under(&root).is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn paths_only_for_hashes() {
        let store = FileStore { root: PathBuf::from("/m") };
        assert!(store.path_of("../../etc/passwd").is_err());
        let hash = "ab".repeat(32);
        assert_eq!(store.path_of(&hash).unwrap(), PathBuf::from(format!("/m/content/ab/ab/{hash}")));
    }
}
