//! What the admin API does, apart from HTTP: accounts, rooms, and the paging they share. The
//! media side lives in `media/admin.rs`, registration tokens in `auth/registration_tokens.rs`.

pub mod notices;
pub mod rooms;
pub mod users;

/// An offset page of a list, as Synapse's admin API pages (`from`, `limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub from: usize,
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Self {
        Self { from: 0, limit: 100 }
    }
}

impl Page {
    pub fn apply<T>(self, items: Vec<T>) -> Vec<T> {
        items.into_iter().skip(self.from).take(self.limit).collect()
    }

    /// Where the next page starts, when there is one.
    pub fn next(self, total: usize) -> Option<usize> {
        let end = self.from.saturating_add(self.limit);
        (end < total).then_some(end)
    }
}
