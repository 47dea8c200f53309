//! Notification e-mails and text messages: what they say, and the signed link that lets a
//! reader unsubscribe without logging in. Core knows no SMTP: the binary plugs a [`Mailer`] in.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ruma::{UserId, signatures::KeyPair};

use crate::{
    Error, Homeserver, Result,
    ephemeral::BoxFuture,
    keys::signing_key::SigningKey,
    util::{constant_time_eq, html_escape as esc},
};

/// The path of the unsubscribe link (Hearth's own endpoint, like Synapse's
/// `/_synapse/client/unsubscribe`).
pub const UNSUBSCRIBE_PATH: &str = "/_matrix/client/unstable/io.hearth/push/unsubscribe";

/// One e-mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Also sent as `List-Unsubscribe`, so mail programs offer it.
    pub unsubscribe_url: String,
}

/// A mail that the SMTP server did not take.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MailError {
    pub message: String,
    /// Whether sending it again may work (the server was unreachable or said "try later"),
    /// rather than a refusal of this mail for good (a bad address).
    pub transient: bool,
}

/// Sends mail (the binary implements it over SMTP).
pub trait Mailer: Send + Sync + 'static {
    fn send(&self, mail: Mail) -> BoxFuture<'_, std::result::Result<(), MailError>>;
}

/// One notification as a mail or a text message shows it.
#[derive(Debug, Clone)]
pub struct Shown {
    pub room: String,
    pub sender: String,
    /// `None` in an encrypted room, or for an event without a text body.
    pub body: Option<String>,
}

/// Longest message text a mail quotes.
const MAX_QUOTED_CHARS: usize = 500;

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// The subject, plain text and HTML of one mail about `shown` (at least one).
pub fn render(app_name: &str, shown: &[Shown], unsubscribe_url: &str) -> (String, String, String) {
    let rooms: std::collections::BTreeSet<&str> = shown.iter().map(|s| s.room.as_str()).collect();
    let subject = match (shown.len(), rooms.len()) {
        (1, _) => format!("[{app_name}] {} in {}", shown[0].sender, shown[0].room),
        (n, 1) => format!("[{app_name}] {n} new messages in {}", shown[0].room),
        (n, r) => format!("[{app_name}] {n} new messages in {r} rooms"),
    };
    let mut text = format!("You have unread messages on {app_name}.\n\n");
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p>You have unread messages on {}.</p>\n<ul>\n",
        esc(app_name)
    );
    for item in shown {
        let body = item.body.as_deref().map(|b| clip(b, MAX_QUOTED_CHARS));
        match &body {
            Some(body) => {
                text.push_str(&format!("{} in {}: {body}\n", item.sender, item.room));
                html.push_str(&format!(
                    "<li><b>{}</b> in <b>{}</b>: {}</li>\n",
                    esc(&item.sender),
                    esc(&item.room),
                    esc(body)
                ));
            }
            None => {
                text.push_str(&format!("{} sent a message in {}\n", item.sender, item.room));
                html.push_str(&format!(
                    "<li><b>{}</b> sent a message in <b>{}</b></li>\n",
                    esc(&item.sender),
                    esc(&item.room)
                ));
            }
        }
    }
    text.push_str(&format!("\nTo stop these e-mails: {unsubscribe_url}\n"));
    html.push_str(&format!(
        "</ul>\n<p><a href=\"{}\">Stop these e-mails</a></p>\n</body></html>\n",
        esc(unsubscribe_url)
    ));
    (subject, text, html)
}

/// The text message about a mention.
pub fn sms_text(app_name: &str, shown: &Shown) -> String {
    const MAX_SMS_CHARS: usize = 160;
    let head = format!("{app_name}: {} mentioned you in {}", shown.sender, shown.room);
    match &shown.body {
        Some(body) => clip(&format!("{head}: {body}"), MAX_SMS_CHARS),
        None => clip(&head, MAX_SMS_CHARS),
    }
}

/// What the unsubscribe link signs: it names one pusher.
fn unsubscribe_message(user: &UserId, app_id: &str, pushkey: &str) -> Vec<u8> {
    // Length-prefixed, so that no two pushers share a message.
    let mut message = b"io.hearth.unsubscribe".to_vec();
    for part in [user.as_str(), app_id, pushkey] {
        message.extend_from_slice(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        message.extend_from_slice(part.as_bytes());
    }
    message
}

/// The server's signature on a pusher's unsubscribe link (ed25519 is deterministic, so the
/// same pusher always gets the same token and none needs storing).
pub fn unsubscribe_token(key: &SigningKey, user: &UserId, app_id: &str, pushkey: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.pair.sign(&unsubscribe_message(user, app_id, pushkey)).as_bytes())
}

impl Homeserver {
    /// The link that removes one pusher, for the mails it sends.
    pub fn unsubscribe_url(&self, user: &UserId, app_id: &str, pushkey: &str) -> String {
        let token = unsubscribe_token(&self.signing_key, user, app_id, pushkey);
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("user_id", user.as_str())
            .append_pair("app_id", app_id)
            .append_pair("pushkey", pushkey)
            .append_pair("token", &token)
            .finish();
        let base = self.config.public_baseurl.trim_end_matches('/');
        format!("{base}{UNSUBSCRIBE_PATH}?{query}")
    }

    /// Removes the pusher an unsubscribe link names, when its token is the server's own.
    pub async fn unsubscribe(&self, user: &UserId, app_id: &str, pushkey: &str, token: &str) -> Result<()> {
        let expected = unsubscribe_token(&self.signing_key, user, app_id, pushkey);
        if !constant_time_eq(expected.as_bytes(), token.as_bytes()) {
            return Err(Error::forbidden("This unsubscribe link is not valid"));
        }
        self.delete_pusher(user, app_id, pushkey).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(room: &str, sender: &str, body: Option<&str>) -> Shown {
        Shown { room: room.into(), sender: sender.into(), body: body.map(Into::into) }
    }

    #[test]
    fn mails_escape_what_people_wrote_and_say_what_is_unread() {
        let items = [shown("Team <3", "Bob", Some("<script>x</script>")), shown("Secret", "Eve", None)];
        let (subject, text, html) = render("Hearth", &items, "http://h/u?a=1&b=2");
        assert_eq!(subject, "[Hearth] 2 new messages in 2 rooms");
        assert!(text.contains("Bob in Team <3: <script>x</script>"), "{text}");
        assert!(text.contains("Eve sent a message in Secret"), "{text}");
        assert!(html.contains("Team &lt;3") && html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("href=\"http://h/u?a=1&amp;b=2\""), "{html}");
    }

    #[test]
    fn texts_fit_one_message() {
        let long = "x".repeat(500);
        let text = sms_text("Hearth", &shown("Room", "Bob", Some(&long)));
        assert_eq!(text.chars().count(), 160);
        assert!(text.starts_with("Hearth: Bob mentioned you in Room: x"));
    }

    #[test]
    fn an_unsubscribe_token_names_exactly_one_pusher() {
        let key = SigningKey::load_or_generate(&hearth_storage::Db::in_memory()).unwrap();
        let user = ruma::user_id!("@a:example.org");
        let token = unsubscribe_token(&key, user, "m.email", "a@example.org");
        assert_eq!(token, unsubscribe_token(&key, user, "m.email", "a@example.org"));
        assert_ne!(token, unsubscribe_token(&key, user, "m.emai", "la@example.org"));
        assert_ne!(
            token,
            unsubscribe_token(&key, ruma::user_id!("@b:example.org"), "m.email", "a@example.org")
        );
    }
}
