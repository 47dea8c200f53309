//! What admins do to media: look it up, quarantine it (served to nobody, as if it did not
//! exist), protect it, and delete it one by one or in bulk by age and size.

use std::collections::BTreeSet;

use hearth_storage::{
    Batch,
    records::MediaRecord,
    schema::{Media as MediaTable, MediaThumbnails, ProfileFields},
};
use ruma::{OwnedServerName, ServerName, UserId};

use super::Media;
use crate::{Error, Result, users::blocking};

/// One media item as the admin API lists it.
#[derive(Debug, Clone)]
pub struct MediaItem {
    pub server: OwnedServerName,
    pub media_id: String,
    pub record: MediaRecord,
}

impl Media {
    /// Every item this server has (local uploads and cached remote media).
    fn all_items(&self) -> Result<Vec<MediaItem>> {
        let mut out = Vec::new();
        for entry in self.db.scan_prefix_all::<MediaTable>()? {
            let ((server, media_id), record) = entry?;
            out.push(MediaItem { server, media_id, record });
        }
        Ok(out)
    }

    /// One item, quarantined or not.
    pub fn item(&self, server: &ServerName, media_id: &str) -> Result<Option<MediaRecord>> {
        self.record(server, media_id)
    }

    /// The local media `user` uploaded (reservations without content left out).
    pub fn uploads_of(&self, user: &UserId) -> Result<Vec<MediaItem>> {
        let mut out = Vec::new();
        for entry in self.db.scan_prefix::<MediaTable, _>(&self.server_name)? {
            let ((server, media_id), record) = entry?;
            if record.uploader.as_deref() == Some(user) && record.sha256.is_some() {
                out.push(MediaItem { server, media_id, record });
            }
        }
        Ok(out)
    }

    /// Quarantines `items` and every other item with the same content (the same file under
    /// another ID is the same content); protected local media is left alone. How many items
    /// this newly quarantined.
    pub async fn quarantine(&self, items: &[(OwnedServerName, String)], by: &UserId) -> Result<u64> {
        self.set_quarantine(items, Some(by)).await
    }

    /// Lifts the quarantine of `items` and of the items sharing their content.
    pub async fn unquarantine(&self, items: &[(OwnedServerName, String)]) -> Result<u64> {
        self.set_quarantine(items, None).await
    }

    async fn set_quarantine(&self, items: &[(OwnedServerName, String)], by: Option<&UserId>) -> Result<u64> {
        let mut hashes = BTreeSet::new();
        let mut named = BTreeSet::new();
        for (server, media_id) in items {
            named.insert((server.clone(), media_id.clone()));
            if let Some(sha) = self.record(server, media_id)?.and_then(|r| r.sha256) {
                hashes.insert(sha);
            }
        }
        let db = self.db.clone();
        let local = self.server_name.clone();
        let by = by.map(ToOwned::to_owned);
        let all = self.all_items()?;
        blocking(move || {
            let mut batch = Batch::new();
            let mut changed = 0;
            for MediaItem { server, media_id, mut record } in all {
                let same_content = record.sha256.as_ref().is_some_and(|s| hashes.contains(s));
                if !same_content && !named.contains(&(server.clone(), media_id.clone())) {
                    continue;
                }
                if by.is_some() && record.protected && server == local {
                    continue;
                }
                if record.quarantined_by == by {
                    continue;
                }
                record.quarantined_by.clone_from(&by);
                batch.put::<MediaTable>(&(server, media_id), &record)?;
                changed += 1;
            }
            db.write(batch)?;
            Ok(changed)
        })
        .await
    }

    /// Protects (or stops protecting) a local item from quarantine and bulk deletion.
    pub async fn set_protected(&self, media_id: &str, protected: bool) -> Result<()> {
        let key = (self.server_name.clone(), media_id.to_owned());
        let mut record = self.db.get::<MediaTable>(&key)?.ok_or_else(|| Error::not_found("Unknown media"))?;
        record.protected = protected;
        let db = self.db.clone();
        blocking(move || Ok(db.put::<MediaTable>(&key, &record)?)).await
    }

    /// Deletes local items (records, thumbnails, and files no other item shares). The IDs
    /// deleted.
    pub async fn delete_local(&self, media_ids: &[String]) -> Result<Vec<String>> {
        let mut doomed = Vec::new();
        for media_id in media_ids {
            if let Some(record) = self.record(&self.server_name, media_id)? {
                doomed.push((media_id.clone(), record));
            }
        }
        let deleted: BTreeSet<&str> = doomed.iter().map(|(id, _)| id.as_str()).collect();
        let still_used: BTreeSet<String> = self
            .all_items()?
            .into_iter()
            .filter(|i| i.server != self.server_name || !deleted.contains(i.media_id.as_str()))
            .filter_map(|i| i.record.sha256)
            .collect();
        let mut batch = Batch::new();
        let mut files = BTreeSet::new();
        for (media_id, record) in &doomed {
            batch.delete::<MediaTable>(&(self.server_name.clone(), media_id.clone()));
            if let Some(sha) = &record.sha256
                && !still_used.contains(sha)
            {
                files.insert(sha.clone());
            }
        }
        // Thumbnails go with their source; a thumbnail file goes too unless another source's
        // thumbnail or an item has the same bytes.
        let mut thumbnails = BTreeSet::new();
        let mut kept_thumbnails = BTreeSet::new();
        for entry in self.db.scan_prefix_all::<MediaThumbnails>()? {
            let (key, thumb) = entry?;
            if files.contains(&key.0) {
                batch.delete::<MediaThumbnails>(&key);
                thumbnails.insert(thumb.sha256);
            } else {
                kept_thumbnails.insert(thumb.sha256);
            }
        }
        files.extend(
            thumbnails.into_iter().filter(|t| !kept_thumbnails.contains(t) && !still_used.contains(t)),
        );
        let db = self.db.clone();
        blocking(move || Ok(db.write(batch)?)).await?;
        // After the records: a file without a record is only wasted space, a record without
        // its file would be served as an error.
        for sha in files {
            if let Err(error) = self.store.remove(&sha).await {
                tracing::warn!(%error, sha, "could not remove a deleted media file");
            }
        }
        let ids: Vec<String> = doomed.into_iter().map(|(id, _)| id).collect();
        tracing::info!(count = ids.len(), "media deleted by an admin");
        Ok(ids)
    }

    /// Deletes local media created before `before_ts` and larger than `size_gt` bytes, never
    /// quarantined or protected items, and with `keep_profiles` never a user's avatar.
    pub async fn delete_older(
        &self,
        before_ts: u64,
        size_gt: u64,
        keep_profiles: bool,
    ) -> Result<Vec<String>> {
        let avatars = if keep_profiles { self.profile_avatars()? } else { BTreeSet::new() };
        let ids: Vec<String> = self
            .db
            .scan_prefix::<MediaTable, _>(&self.server_name)?
            .filter_map(|entry| match entry {
                Ok(((_, media_id), record)) => {
                    let candidate = record.created_ts < before_ts
                        && record.size > size_gt
                        && record.quarantined_by.is_none()
                        && !record.protected
                        && !avatars.contains(&format!("mxc://{}/{media_id}", self.server_name));
                    candidate.then_some(Ok(media_id))
                }
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        self.delete_local(&ids).await
    }

    /// Media in use as a profile picture.
    fn profile_avatars(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for entry in self.db.scan_prefix_all::<ProfileFields>()? {
            let ((_, field), value) = entry?;
            if field == "avatar_url"
                && let Some(url) = value.as_str()
            {
                out.insert(url.to_owned());
            }
        }
        Ok(out)
    }
}
