//! Lookups across servers: profiles, room aliases and public room directories, answered for
//! other servers about what is ours, and asked of other servers about what is theirs.

use std::collections::BTreeMap;

use ruma::{
    OwnedRoomId, OwnedServerName, RoomAliasId, ServerName, UInt, UserId,
    api::federation::{
        directory::get_public_rooms_filtered,
        query::{get_profile_information, get_room_information},
    },
    directory::{Filter, PublicRoomsChunk, RoomNetwork},
};
use serde_json::Value;

use crate::{Error, Homeserver, Result};

/// One page of a room directory: the rooms, the next and previous tokens, and the total.
#[derive(Debug, Default)]
pub struct DirectoryPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: Option<UInt>,
}

impl DirectoryPage {
    /// The fields every directory response has, in the order ruma's responses name them:
    /// chunk, next batch, previous batch, total.
    pub fn into_parts(self) -> (Vec<PublicRoomsChunk>, Option<String>, Option<String>, Option<UInt>) {
        (self.chunk, self.next_batch, self.prev_batch, self.total)
    }
}

fn profile_not_found() -> Error {
    Error::not_found("Profile was not found")
}

impl Homeserver {
    /// `GET /query/profile`: a local user's profile, or the one field asked for.
    pub fn profile_for_server(&self, user: &UserId, field: Option<&str>) -> Result<BTreeMap<String, Value>> {
        if !self.users.is_local(user) {
            return Err(profile_not_found());
        }
        let mut profile = self.users.profile(user)?.ok_or_else(profile_not_found)?;
        if let Some(field) = field {
            profile.retain(|k, _| k == field);
        }
        Ok(profile)
    }

    /// Any user's profile: a local one from storage, another server's asked of that server.
    pub async fn profile_of(&self, user: &UserId) -> Result<BTreeMap<String, Value>> {
        if self.users.is_local(user) {
            if let Some(profile) = self.users.cached_profile(user).await? {
                return Ok(profile);
            }
            // A bridge's user may come into being when its service is asked about it.
            if !self.user_exists_or_queried(user).await? {
                return Err(profile_not_found());
            }
            return self.users.cached_profile(user).await?.ok_or_else(profile_not_found);
        }
        if !self.federation.enabled() {
            return Err(profile_not_found());
        }
        let request = get_profile_information::v1::Request::new(user.to_owned());
        let response = self.federation_request(user.server_name(), request).await?;
        Ok(response.into_iter().collect())
    }

    /// `GET /query/directory`: the room a local alias names and servers that can get us in. An
    /// alias nobody created yet may be an application service's to create on demand.
    pub async fn directory_for_server(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let not_found = || Error::not_found("Room alias not found");
        if alias.server_name() != self.server_name() {
            return Err(not_found());
        }
        let room_id = self.resolve_alias_or_query(alias).await?.ok_or_else(not_found)?;
        Ok((room_id.clone(), self.resident_servers(&room_id)?))
    }

    /// This server first, then the other servers with members in the room.
    fn resident_servers(&self, room_id: &ruma::RoomId) -> Result<Vec<OwnedServerName>> {
        let mut servers = vec![self.server_name().to_owned()];
        servers.extend(self.servers_in_room(room_id)?);
        Ok(servers)
    }

    /// Resolves any alias: ours from storage, another server's by asking that server.
    pub async fn resolve_room_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        crate::server_name::check_server_name(alias.server_name())?;
        if alias.server_name() == self.server_name() || !self.federation.enabled() {
            return self.directory_for_server(alias).await;
        }
        let request = get_room_information::v1::Request::new(alias.to_owned());
        let response = self.federation_request(alias.server_name(), request).await?;
        Ok((response.room_id, response.servers))
    }

    /// A page of this server's public room directory: `since` is an offset into the ordered
    /// list (`o<n>`).
    pub fn public_rooms_page(
        &self,
        search: Option<&str>,
        network: &RoomNetwork,
        limit: Option<UInt>,
        since: Option<&str>,
    ) -> Result<DirectoryPage> {
        let rooms = self.rooms.public_rooms(search, network)?;
        let total = UInt::new_saturating(rooms.len() as u64);
        let offset = match since {
            Some(s) => s
                .strip_prefix('o')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| Error::invalid_param("Unknown pagination token"))?,
            None => 0,
        };
        let limit = limit.map_or(usize::MAX, |l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX)).max(1);
        let end = offset.saturating_add(limit).min(rooms.len());
        Ok(DirectoryPage {
            next_batch: (end < rooms.len()).then(|| format!("o{end}")),
            prev_batch: (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit))),
            chunk: rooms.into_iter().skip(offset).take(end.saturating_sub(offset)).map(Into::into).collect(),
            total: Some(total),
        })
    }

    /// A page of any server's public room directory; another server's is asked over
    /// federation (with the filter, when there is one).
    pub async fn public_rooms_of(
        &self,
        server: Option<&ServerName>,
        limit: Option<UInt>,
        since: Option<&str>,
        filter: Option<Filter>,
        network: RoomNetwork,
    ) -> Result<DirectoryPage> {
        let server = match server {
            Some(server) if server != self.server_name() => server,
            _ => {
                let search = filter.as_ref().and_then(|f| f.generic_search_term.as_deref());
                return self.public_rooms_page(search, &network, limit, since);
            }
        };
        if !self.federation.enabled() {
            return Err(Error::not_found("Unknown server"));
        }
        // The filtered form serves both: an empty filter is no filter.
        let mut request = get_public_rooms_filtered::v1::Request::new();
        (request.limit, request.since) = (limit, since.map(ToOwned::to_owned));
        request.filter = filter.unwrap_or_default();
        request.room_network = network;
        let r = self.federation_request(server, request).await?;
        let page = DirectoryPage {
            chunk: r.chunk,
            next_batch: r.next_batch,
            prev_batch: r.prev_batch,
            total: r.total_room_count_estimate,
        };
        Ok(page)
    }
}
