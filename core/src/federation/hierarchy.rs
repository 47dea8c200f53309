//! Space hierarchies: the client's walk down a space (`GET /rooms/{id}/hierarchy`), which asks
//! other servers about rooms this one is not in, and the answer to their same question
//! (`GET /_matrix/federation/v1/hierarchy/{id}`).
//!
//! The walk is depth-first, children in the spec's order, so that pages follow one another.
//! A page token records the walk's parameters and how many rooms earlier pages gave: the next
//! page walks again and skips those, so no walk state is kept between requests.

use ruma::events::room::member::MembershipState;
use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId,
    api::federation::space::{SpaceHierarchyParentSummary, get_hierarchy},
    room::{JoinRuleSummary, RoomSummary, RoomType},
    serde::Raw,
};
use serde_json::Value;

use crate::{Error, Homeserver, Result, rooms::valid_via};

/// Rooms a page holds at most, and the default.
pub const MAX_PAGE: usize = 50;
/// Rooms one walk may pass (earlier pages' included), and other servers it may ask: a bound
/// on what one request can cost.
const MAX_WALK: usize = 1000;
const MAX_REMOTE_ASKS: usize = 50;
/// Servers asked about one room, from its link's `via`.
const VIA_TRIED: usize = 3;

/// A client's hierarchy request.
#[derive(Debug, Clone)]
pub struct HierarchyQuery {
    pub suggested_only: bool,
    pub max_depth: Option<u64>,
    pub limit: usize,
    /// A `next_batch` from an earlier page.
    pub from: Option<String>,
}

/// One room of a hierarchy page: its summary and, for a space, its links.
#[derive(Debug, Clone)]
pub struct HierarchyRoom {
    pub summary: RoomSummary,
    pub children_state: Vec<Value>,
}

/// A room the walk reached: its summary and links, and what its server said of its children
/// (summaries of those it is in, and those the asker may not see).
struct Entry {
    summary: RoomSummary,
    children_state: Vec<Value>,
    known: BTreeMap<OwnedRoomId, RoomSummary>,
    inaccessible: BTreeSet<OwnedRoomId>,
}

impl Entry {
    fn bare(summary: RoomSummary, children_state: Vec<Value>) -> Self {
        Self { summary, children_state, known: BTreeMap::new(), inaccessible: BTreeSet::new() }
    }
}

struct Pending {
    room_id: OwnedRoomId,
    via: Vec<OwnedServerName>,
    depth: u64,
    /// What the parent's server said of this room, if it was asked.
    remote: Option<RoomSummary>,
}

fn token(query: &HierarchyQuery, skip: usize) -> String {
    let depth = query.max_depth.map_or_else(|| "-".to_owned(), |d| d.to_string());
    format!("{skip}_{}_{depth}", u8::from(query.suggested_only))
}

/// How many rooms earlier pages gave, from a token made for the same parameters.
fn skip_of(query: &HierarchyQuery) -> Result<usize> {
    let Some(from) = &query.from else { return Ok(0) };
    let bad = || Error::invalid_param("Unknown or mismatched pagination token");
    let (skip, _) = from.split_once('_').ok_or_else(bad)?;
    let skip: usize = skip.parse().map_err(|_| bad())?;
    // The rest must be what this query would write: the same suggested_only and max_depth.
    if token(query, skip) != *from || skip >= MAX_WALK {
        return Err(bad());
    }
    Ok(skip)
}

/// The links a remote server sent: only well-formed `m.space.child` events with a `via`.
fn remote_children(room: &SpaceHierarchyParentSummary) -> Vec<Value> {
    room.children_state
        .iter()
        .filter_map(|raw| serde_json::from_str::<Value>(raw.json().get()).ok())
        .filter(|e| {
            e["type"] == "m.space.child"
                && e["state_key"].as_str().is_some_and(|k| RoomId::parse(k).is_ok())
                && valid_via(&e["content"]).is_some()
        })
        .collect()
}

fn is_space(summary: &RoomSummary) -> bool {
    summary.room_type.as_ref().is_some_and(|t| *t == RoomType::Space)
}

impl Homeserver {
    /// One page of the hierarchy under `root` as `user` may see it, and the next page's token.
    pub async fn space_hierarchy(
        &self,
        user: &UserId,
        root: &RoomId,
        query: &HierarchyQuery,
    ) -> Result<(Vec<HierarchyRoom>, Option<String>)> {
        let skip = skip_of(query)?;
        let limit = query.limit.clamp(1, MAX_PAGE);
        let via: Vec<OwnedServerName> = root.server_name().map(ToOwned::to_owned).into_iter().collect();
        let mut stack = vec![Pending { room_id: root.to_owned(), via, depth: 0, remote: None }];
        let (mut processed, mut passed, mut asks) = (BTreeSet::new(), 0_usize, 0_usize);
        let mut page = Vec::new();
        while let Some(next) = stack.pop() {
            if !processed.insert(next.room_id.clone()) {
                continue;
            }
            let at_bottom = query.max_depth.is_some_and(|max| next.depth >= max);
            let found = if self.rooms.resident(&next.room_id)? {
                self.local_entry(user, &next.room_id, query.suggested_only)?
            } else {
                let described =
                    if let Some(summary) = next.remote.clone().filter(|s| !is_space(s) || at_bottom) {
                        Some(Entry::bare(summary, Vec::new()))
                    } else if asks < MAX_REMOTE_ASKS {
                        asks += 1;
                        self.remote_entry(&next.room_id, &next.via, query.suggested_only).await
                    } else {
                        None
                    };
                match described {
                    Some(entry) if self.may_see_remote(Some(user), &next.room_id, &entry.summary)? => {
                        Some(entry)
                    }
                    _ => None,
                }
            };
            // A room the user may not see is passed over, and so is what lies under it; the
            // root among them, when nothing at all was found (below).
            let Some(Entry { summary, children_state, known, inaccessible }) = found else { continue };
            if !at_bottom {
                for link in children_state.iter().rev() {
                    let Some(child) = link["state_key"].as_str().and_then(|k| RoomId::parse(k).ok()) else {
                        continue;
                    };
                    if inaccessible.contains(&child) || processed.contains(&child) {
                        continue;
                    }
                    stack.push(Pending {
                        via: valid_via(&link["content"]).unwrap_or_default(),
                        depth: next.depth + 1,
                        remote: known.get(&child).cloned(),
                        room_id: child,
                    });
                }
            }
            passed += 1;
            if passed > skip {
                page.push(HierarchyRoom { summary, children_state });
            }
            if page.len() >= limit || passed >= MAX_WALK {
                break;
            }
        }
        if passed == 0 {
            // Not even the root: this server is not in it and no server would describe it.
            return Err(Error::forbidden("You may not see this room's hierarchy"));
        }
        let next_batch = (!stack.is_empty() && passed < MAX_WALK).then(|| token(query, passed));
        Ok((page, next_batch))
    }

    /// A room this server is in, if `user` may see it: summary, links, and nothing learnt of
    /// other rooms (their summaries are read here when the walk reaches them).
    fn local_entry(&self, user: &UserId, room_id: &RoomId, suggested_only: bool) -> Result<Option<Entry>> {
        let Some(view) = self.rooms.summary_for(room_id, Some(user))? else { return Ok(None) };
        let children = self.rooms.space_children(room_id, suggested_only)?;
        Ok(Some(Entry::bare(view.to_summary(), children.into_iter().map(|c| c.stripped).collect())))
    }

    /// A room this server is not in, from the first of its link's servers that answers; an
    /// error or a refusal from all of them leaves it out (and is not remembered).
    async fn remote_entry(
        &self,
        room_id: &RoomId,
        via: &[OwnedServerName],
        suggested_only: bool,
    ) -> Option<Entry> {
        for server in via.iter().filter(|s| *s != self.server_name()).take(VIA_TRIED) {
            let mut request = get_hierarchy::v1::Request::new(room_id.to_owned());
            request.suggested_only = suggested_only;
            let response = match self.federation_request(server, request).await {
                Ok(response) if response.room.summary.room_id == room_id => response,
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!(%server, %room_id, %error, "no hierarchy from this server");
                    continue;
                }
            };
            let children_state = remote_children(&response.room);
            let known = response.children.into_iter().map(|c| (c.room_id.clone(), c)).collect();
            let inaccessible = response.inaccessible_children.into_iter().collect();
            return Some(Entry { summary: response.room.summary, children_state, known, inaccessible });
        }
        None
    }

    /// Whether `user` may see a room another server described: public, knock or
    /// world-readable rooms; restricted ones when they are in an allowed room; any room they
    /// are invited to or in.
    fn may_see_remote(&self, user: Option<&UserId>, room_id: &RoomId, summary: &RoomSummary) -> Result<bool> {
        let allowed = match &summary.join_rule {
            JoinRuleSummary::Public | JoinRuleSummary::Knock | JoinRuleSummary::KnockRestricted(_) => {
                return Ok(true);
            }
            JoinRuleSummary::Restricted(restricted) => restricted.allowed_room_ids.as_slice(),
            _ => &[],
        };
        if summary.world_readable {
            return Ok(true);
        }
        let Some(user) = user else { return Ok(false) };
        for room in allowed {
            if self.rooms.membership(room, user)? == Some(MembershipState::Join) {
                return Ok(true);
            }
        }
        Ok(matches!(
            self.rooms.membership(room_id, user)?,
            Some(MembershipState::Join | MembershipState::Invite)
        ))
    }

    /// The summary of a room this server is not in, from the servers in `via` (and the room
    /// ID's), if `viewer` may see it: what `GET /room_summary` shows of rooms elsewhere.
    pub async fn remote_room_summary(
        &self,
        viewer: Option<&UserId>,
        room_id: &RoomId,
        via: &[OwnedServerName],
    ) -> Result<Option<RoomSummary>> {
        let mut servers = via.to_vec();
        servers.extend(room_id.server_name().map(ToOwned::to_owned));
        let Some(Entry { summary, .. }) = self.remote_entry(room_id, &servers, false).await else {
            return Ok(None);
        };
        Ok(self.may_see_remote(viewer, room_id, &summary)?.then_some(summary))
    }

    /// `GET /_matrix/federation/v1/hierarchy/{roomId}` for `origin`: the room and its links,
    /// the children this server is in that `origin` may see, and those it may not. A room this
    /// server is not in, or that `origin` may not see, is not found.
    pub fn hierarchy_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<get_hierarchy::v1::Response> {
        let not_found = || Error::not_found("Room not found or not accessible");
        let view = self.rooms.room_view(room_id)?.ok_or_else(not_found)?;
        if !self.rooms.visible_to_server(room_id, origin, &view)? {
            return Err(not_found());
        }
        let links = self.rooms.space_children(room_id, suggested_only)?;
        let mut children_state = Vec::new();
        let mut response_children = Vec::new();
        let mut inaccessible = Vec::new();
        for link in links.into_iter().take(MAX_PAGE) {
            let raw = serde_json::value::to_raw_value(&link.stripped).map_err(Error::internal)?;
            children_state.push(Raw::from_json(raw));
            // Children this server is not in are for the asker to find through their `via`.
            let Some(child) = self.rooms.room_view(&link.room_id)? else { continue };
            if self.rooms.visible_to_server(&link.room_id, origin, &child)? {
                response_children.push(child.to_summary());
            } else {
                inaccessible.push(link.room_id);
            }
        }
        let room = SpaceHierarchyParentSummary::new(view.to_summary(), children_state);
        let mut response = get_hierarchy::v1::Response::new(room);
        response.children = response_children;
        response.inaccessible_children = inaccessible;
        Ok(response)
    }
}
