//! Pushers: where a user's notifications are delivered (a push gateway for a phone app, an
//! e-mail address, a phone number), each with its own durable queue.

use hearth_storage::{
    Batch, Db,
    records::{NotificationRecord, PushQueueItem, PusherRecord},
    schema::{PushQueue, PusherKeys, Pushers},
};
use ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, UserId,
    api::client::push::{Pusher, PusherKind},
};

use crate::{Error, Homeserver, Result, users::blocking, util::now_ms};

/// The spec's limits on a pusher's IDs.
const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;
/// Limits Hearth sets on the other text fields, which gateways and mails repeat.
const MAX_FIELD_BYTES: usize = 512;
/// The most a whole pusher may take as JSON: its `data` goes to the gateway with every
/// notification.
const MAX_PUSHER_BYTES: usize = 8192;

/// The pusher kind of the SMS channel.
pub const SMS_KIND: &str = "io.hearth.sms";
/// The `kind` of pushers that deliver over HTTP to a push gateway.
pub const HTTP_KIND: &str = "http";
pub const EMAIL_KIND: &str = "email";

/// The path every push gateway serves (Push Gateway API).
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// A stored pusher.
#[derive(Debug, Clone)]
pub struct StoredPusher {
    pub user_id: OwnedUserId,
    pub pusher: Pusher,
    pub device_id: Option<OwnedDeviceId>,
}

impl StoredPusher {
    pub fn kind(&self) -> String {
        kind_of(&self.pusher)
    }
}

/// A pusher's `kind`; one ruma does not model (the SMS kind) is read back from its JSON.
fn kind_of(pusher: &Pusher) -> String {
    match &pusher.kind {
        PusherKind::Http(_) => HTTP_KIND.to_owned(),
        PusherKind::Email(_) => EMAIL_KIND.to_owned(),
        _ => serde_json::to_value(pusher)
            .ok()
            .and_then(|v| v.get("kind")?.as_str().map(str::to_owned))
            .unwrap_or_default(),
    }
}

/// Which pusher kinds this server can deliver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Channels {
    pub email: bool,
    pub sms: bool,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_param(message.into())
}

/// Checks a pusher a client asks for: the spec's limits, a kind this server delivers, and for
/// HTTP pushers a gateway URL (http or https, with the Push Gateway API's path).
pub fn validate(pusher: &Pusher, channels: Channels) -> Result<()> {
    let ids = &pusher.ids;
    if ids.app_id.is_empty() || ids.app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(invalid(format!("app_id must be 1 to {MAX_APP_ID_CHARS} characters")));
    }
    if ids.pushkey.is_empty() || ids.pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(invalid(format!("pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes")));
    }
    let fields = [&pusher.app_display_name, &pusher.device_display_name, &pusher.lang];
    if fields.into_iter().chain(pusher.profile_tag.as_ref()).any(|f| f.len() > MAX_FIELD_BYTES) {
        return Err(invalid(format!("pusher fields are limited to {MAX_FIELD_BYTES} bytes")));
    }
    let size = serde_json::to_vec(pusher).map_or(usize::MAX, |json| json.len());
    if size > MAX_PUSHER_BYTES {
        return Err(invalid(format!("a pusher is limited to {MAX_PUSHER_BYTES} bytes of JSON")));
    }
    match kind_of(pusher).as_str() {
        HTTP_KIND => {
            let PusherKind::Http(data) = &pusher.kind else {
                return Err(invalid("unknown pusher kind"));
            };
            let url = url::Url::parse(&data.url).map_err(|_| invalid("data.url is not a URL"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid("data.url must be an http or https URL"));
            }
            if url.path() != NOTIFY_PATH {
                return Err(invalid(format!("data.url must have the path {NOTIFY_PATH}")));
            }
        }
        EMAIL_KIND if channels.email => {
            if !looks_like_email(&ids.pushkey) {
                return Err(invalid("an e-mail pusher's pushkey must be an e-mail address"));
            }
        }
        SMS_KIND if channels.sms => {
            if !looks_like_phone_number(&ids.pushkey) {
                return Err(invalid("an SMS pusher's pushkey must be a phone number in E.164 form"));
            }
        }
        EMAIL_KIND | SMS_KIND => return Err(invalid("this server does not deliver that kind of pusher")),
        _ => return Err(invalid("unknown pusher kind")),
    }
    Ok(())
}

fn looks_like_email(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ','))
}

fn looks_like_phone_number(number: &str) -> bool {
    let digits = number.strip_prefix('+').unwrap_or("");
    (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Every pusher of a user.
pub fn of_user(db: &Db, user: &UserId) -> Result<Vec<StoredPusher>> {
    let mut out = Vec::new();
    for row in db.scan_prefix::<Pushers, _>(&user.to_owned())?.lenient() {
        let ((user_id, ..), record) = row?;
        let Some(record) = record else { continue };
        match serde_json::from_value::<Pusher>(record.pusher) {
            Ok(pusher) => out.push(StoredPusher { user_id, pusher, device_id: record.device_id }),
            Err(error) => tracing::warn!(%user, %error, "skipped a stored pusher that does not parse"),
        }
    }
    Ok(out)
}

/// One pusher.
pub fn get(db: &Db, user: &UserId, app_id: &str, pushkey: &str) -> Result<Option<StoredPusher>> {
    let key = (user.to_owned(), app_id.to_owned(), pushkey.to_owned());
    let Some(record) = db.get_lenient::<Pushers>(&key)? else { return Ok(None) };
    Ok(serde_json::from_value::<Pusher>(record.pusher).ok().map(|pusher| StoredPusher {
        user_id: user.to_owned(),
        pusher,
        device_id: record.device_id,
    }))
}

/// Deletes a pusher and what was queued for it, in `batch`.
pub fn delete_in(db: &Db, batch: &mut Batch, user: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
    let (user, app_id, pushkey) = (user.to_owned(), app_id.to_owned(), pushkey.to_owned());
    batch.delete::<Pushers>(&(user.clone(), app_id.clone(), pushkey.clone()));
    batch.delete::<PusherKeys>(&(app_id.clone(), pushkey.clone(), user.clone()));
    for row in db.scan_prefix::<PushQueue, _>(&(user, app_id, pushkey))? {
        let (key, _) = row?;
        batch.delete::<PushQueue>(&key);
    }
    Ok(())
}

/// Deletes, in `batch`, the pushers set from the given devices (`None`: every pusher).
pub fn delete_for_devices(
    db: &Db,
    batch: &mut Batch,
    user: &UserId,
    devices: Option<&[OwnedDeviceId]>,
) -> Result<()> {
    for row in db.scan_prefix::<Pushers, _>(&user.to_owned())?.lenient() {
        let ((_, app_id, pushkey), record) = row?;
        let from_device = |d: &DeviceId| devices.is_none_or(|ds| ds.iter().any(|x| x == d));
        let matches = match record {
            Some(record) => devices.is_none() || record.device_id.as_deref().is_some_and(from_device),
            // Unreadable: it could never deliver, so it goes with any deletion.
            None => true,
        };
        if matches {
            delete_in(db, batch, user, &app_id, &pushkey)?;
        }
    }
    Ok(())
}

/// Queues a notification, in the event's batch, for each pusher of the user.
pub fn queue(
    db: &Db,
    batch: &mut Batch,
    user: &UserId,
    notification: &NotificationRecord,
    pos: u64,
) -> Result<()> {
    for row in db.scan_prefix::<Pushers, _>(&user.to_owned())? {
        let ((_, app_id, pushkey), _) = row?;
        let item = PushQueueItem {
            room_id: notification.room_id.clone(),
            event_id: notification.event_id.clone(),
            actions: notification.actions.clone(),
            ts: notification.ts,
        };
        batch.put::<PushQueue>(&(user.to_owned(), app_id, pushkey, pos), &item)?;
    }
    Ok(())
}

impl Homeserver {
    /// Creates or replaces a pusher (`POST /pushers/set`). Without `append`, pushers of other
    /// users with the same app ID and pushkey are removed: the device changed hands.
    pub async fn set_pusher(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        pusher: Pusher,
        append: bool,
    ) -> Result<()> {
        validate(&pusher, self.push_channels())?;
        let db = self.db.clone();
        let user = user.to_owned();
        let record = PusherRecord {
            pusher: serde_json::to_value(&pusher).map_err(Error::internal)?,
            device_id: device.map(ToOwned::to_owned),
            created_ts: now_ms(),
        };
        let (app_id, pushkey) = (pusher.ids.app_id, pusher.ids.pushkey);
        blocking(move || {
            let mut batch = Batch::new();
            if !append {
                for row in db.scan_prefix::<PusherKeys, _>(&(app_id.clone(), pushkey.clone()))? {
                    let ((.., other), ()) = row?;
                    if other != user {
                        delete_in(&db, &mut batch, &other, &app_id, &pushkey)?;
                    }
                }
            }
            batch.put::<Pushers>(&(user.clone(), app_id.clone(), pushkey.clone()), &record)?;
            batch.put::<PusherKeys>(&(app_id, pushkey, user), &())?;
            db.write(batch)?;
            Ok(())
        })
        .await?;
        self.pusher_wake.notify_one();
        Ok(())
    }

    /// Deletes a pusher (`POST /pushers/set` with `kind: null`); deleting one that does not
    /// exist is not an error, as in Synapse.
    pub async fn delete_pusher(&self, user: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
        let db = self.db.clone();
        let (user, app_id, pushkey) = (user.to_owned(), app_id.to_owned(), pushkey.to_owned());
        blocking(move || {
            let mut batch = Batch::new();
            delete_in(&db, &mut batch, &user, &app_id, &pushkey)?;
            db.write(batch)?;
            Ok(())
        })
        .await
    }

    /// The user's pushers (`GET /pushers`).
    pub fn pushers(&self, user: &UserId) -> Result<Vec<Pusher>> {
        Ok(of_user(&self.db, user)?.into_iter().map(|p| p.pusher).collect())
    }

    /// The pusher kinds beyond HTTP this server is configured to deliver.
    pub fn push_channels(&self) -> Channels {
        Channels {
            email: self.mailer.is_some() && self.config.email.smtp_host.is_some(),
            sms: self.config.sms.api_url.is_some(),
        }
    }
}
