//! The one error type of the homeserver logic, and the one table that maps it to what a client
//! sees: an HTTP status and a Matrix `errcode`.

use std::borrow::Cow;

use ruma::api::{
    client::uiaa::UiaaInfo,
    error::{ErrorKind, UnknownTokenErrorData},
};

/// Every error code Hearth sends. Keeping our own closed enum (ruma's is non-exhaustive) makes
/// [`ErrorCode::status_and_kind`] exhaustive: a new code cannot be added without its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    NotJson,
    MissingParam,
    InvalidParam,
    TooLarge,
    MissingToken,
    UnknownToken,
    /// An access token that expired: the client should refresh it, or log in again keeping its
    /// device (`soft_logout: true`).
    SoftLogout,
    Forbidden,
    UserDeactivated,
    /// An account an admin locked: its tokens stay valid, its requests are refused
    /// (`soft_logout: true`, so clients keep their device for when it is unlocked).
    UserLocked,
    GuestAccessForbidden,
    NotFound,
    /// An endpoint that does not exist.
    Unrecognized,
    /// An endpoint that exists, called with the wrong method.
    MethodNotAllowed,
    UserInUse,
    InvalidUsername,
    Exclusive,
    WeakPassword,
    LimitExceeded,
    /// Account data that the server manages and clients may not set.
    ServerManagedAccountData,
    /// A request the server understood but cannot act on, without a more specific code.
    BadRequest,
    UnsupportedRoomVersion,
    /// Another server cannot take part in a room of this version (`make_join`, `make_knock`);
    /// refined with the room's version where the error is rendered.
    IncompatibleRoomVersion,
    RoomInUse,
    /// `PUT /directory/room/{alias}` for an alias that exists (the spec's 409).
    AliasExists,
    BadAlias,
    /// Refined with the current version where the error is rendered.
    WrongRoomKeysVersion,
    /// A federation request without a valid X-Matrix signature.
    Unauthorized,
    /// Another server could not be reached or answered with nonsense.
    RemoteUnavailable,
    /// An asynchronous upload whose content has not arrived in time.
    NotYetUploaded,
    /// A sliding sync position the server no longer knows: the client starts a new connection.
    UnknownPos,
    /// An asynchronous upload sent twice.
    CannotOverwriteMedia,
    /// A third-party identifier (e-mail, phone) this server cannot verify (MSC4178).
    ThreepidMediumNotSupported,
    /// No validated third-party identifier session matches.
    ThreepidAuthFailed,
    /// An identity server this server does not work with.
    ServerNotTrusted,
    /// A delayed event's delay over the limit: `M_UNKNOWN` with the unstable code beside it
    /// (see [`Error::extra_fields`]).
    MaxDelayExceeded,
    /// The same reaction (annotation key) to the same event by the same user, again.
    DuplicateAnnotation,
    /// A server this one fetched from (for a URL preview) failed or refused.
    Upstream,
    /// An identity provider (or another server Hearth had to ask) failed or answered nonsense.
    BadGateway,
    /// An application service's request named a device its user does not have.
    UnknownDevice,
    /// Logging in as an application service's user, for a service that manages its users'
    /// devices itself (MSC4190).
    AppserviceLoginUnsupported,
    /// Pinging an application service (MSC2659) that has no URL, that could not be reached,
    /// that did not answer in time, or that answered with an error status.
    UrlNotSet,
    ConnectionFailed,
    ConnectionTimeout,
    BadStatus,
    Unknown,
}

impl ErrorCode {
    pub fn status_and_kind(self) -> (u16, ErrorKind) {
        match self {
            Self::BadJson => (400, ErrorKind::BadJson),
            Self::NotJson => (400, ErrorKind::NotJson),
            Self::MissingParam => (400, ErrorKind::MissingParam),
            Self::InvalidParam => (400, ErrorKind::InvalidParam),
            Self::TooLarge => (413, ErrorKind::TooLarge),
            Self::MissingToken => (401, ErrorKind::MissingToken),
            Self::UnknownToken => (401, ErrorKind::UnknownToken(UnknownTokenErrorData::new())),
            Self::SoftLogout => {
                let mut data = UnknownTokenErrorData::new();
                data.soft_logout = true;
                (401, ErrorKind::UnknownToken(data))
            }
            Self::Forbidden => (403, ErrorKind::Forbidden),
            Self::UserDeactivated => (403, ErrorKind::UserDeactivated),
            Self::UserLocked => (401, ErrorKind::UserLocked),
            Self::UnknownPos => (400, ErrorKind::UnknownPos),
            Self::GuestAccessForbidden => (403, ErrorKind::GuestAccessForbidden),
            Self::NotFound => (404, ErrorKind::NotFound),
            Self::Unrecognized => (404, ErrorKind::Unrecognized),
            Self::MethodNotAllowed => (405, ErrorKind::Unrecognized),
            Self::UserInUse => (400, ErrorKind::UserInUse),
            Self::InvalidUsername => (400, ErrorKind::InvalidUsername),
            Self::Exclusive => (400, ErrorKind::Exclusive),
            Self::WeakPassword => (400, ErrorKind::WeakPassword),
            Self::LimitExceeded => (429, ErrorKind::LimitExceeded(Default::default())),
            Self::ServerManagedAccountData => (405, ErrorKind::BadJson),
            Self::BadRequest => (400, ErrorKind::Unknown),
            Self::UnsupportedRoomVersion => (400, ErrorKind::UnsupportedRoomVersion),
            Self::IncompatibleRoomVersion => (
                400,
                ErrorKind::IncompatibleRoomVersion(ruma::api::error::IncompatibleRoomVersionErrorData::new(
                    ruma::RoomVersionId::V1,
                )),
            ),
            Self::RoomInUse => (400, ErrorKind::RoomInUse),
            Self::AliasExists => (409, ErrorKind::Unknown),
            Self::BadAlias => (400, ErrorKind::BadAlias),
            Self::WrongRoomKeysVersion => (
                403,
                ErrorKind::WrongRoomKeysVersion(ruma::api::error::WrongRoomKeysVersionErrorData::new(
                    String::new(),
                )),
            ),
            Self::Unauthorized => (401, ErrorKind::Unauthorized),
            Self::RemoteUnavailable => (502, ErrorKind::Unknown),
            Self::NotYetUploaded => (504, ErrorKind::NotYetUploaded),
            Self::CannotOverwriteMedia => (409, ErrorKind::CannotOverwriteMedia),
            Self::ThreepidMediumNotSupported => (400, ErrorKind::ThreepidMediumNotSupported),
            Self::ThreepidAuthFailed => (400, ErrorKind::ThreepidAuthFailed),
            Self::DuplicateAnnotation => (400, ErrorKind::DuplicateAnnotation),
            Self::MaxDelayExceeded => (400, ErrorKind::Unknown),
            Self::ServerNotTrusted => (403, ErrorKind::ServerNotTrusted),
            Self::Upstream => (502, ErrorKind::Unknown),
            Self::BadGateway => (502, ErrorKind::Unknown),
            Self::UnknownDevice => (400, ErrorKind::UnknownDevice),
            Self::AppserviceLoginUnsupported => (400, ErrorKind::AppserviceLoginUnsupported),
            Self::UrlNotSet => (400, ErrorKind::UrlNotSet),
            Self::ConnectionFailed => (502, ErrorKind::ConnectionFailed),
            Self::ConnectionTimeout => (504, ErrorKind::ConnectionTimeout),
            Self::BadStatus => (502, ErrorKind::BadStatus(ruma::api::error::BadStatusErrorData::new())),
            Self::Unknown => (500, ErrorKind::Unknown),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the client did or asked for; its message is shown to the client.
    #[error("{message}")]
    Matrix { code: ErrorCode, message: Cow<'static, str> },
    /// User-interactive authentication must continue: answered with 401 and the flow state.
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),
    #[error(transparent)]
    Storage(#[from] hearth_storage::Error),
    /// A key backup write named a version that is not the current one.
    #[error("Wrong backup version")]
    WrongRoomKeysVersion(String),
    /// 429 `M_LIMIT_EXCEEDED` with the time after which the client may try again.
    #[error("{message}")]
    LimitExceeded { message: Cow<'static, str>, retry_after: std::time::Duration },
    /// The room's version, which the requesting server does not support (or which lacks what
    /// it asked for, such as knocking).
    #[error("This room's version ({0}) is not one your server supports for this")]
    IncompatibleRoomVersion(ruma::RoomVersionId),
    /// A delayed event (MSC4140) asked for a longer delay than this server allows.
    #[error("The requested delay exceeds the allowed maximum ({max_delay_ms} ms)")]
    MaxDelayExceeded { max_delay_ms: u64 },
    /// An application service answered a ping with an error status: the client sees it.
    #[error("The application service answered with status {status}")]
    BadStatus { status: u16, body: String },
    /// A bug or an environment failure; the client sees only `M_UNKNOWN`.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! constructors {
    ($($fn_name:ident => $code:ident),* $(,)?) => {
        impl Error {
            $(
                pub fn $fn_name(message: impl Into<Cow<'static, str>>) -> Self {
                    Self::Matrix { code: ErrorCode::$code, message: message.into() }
                }
            )*
        }
    };
}

constructors! {
    bad_json => BadJson,
    not_json => NotJson,
    missing_param => MissingParam,
    invalid_param => InvalidParam,
    too_large => TooLarge,
    forbidden => Forbidden,
    not_found => NotFound,
    user_in_use => UserInUse,
    invalid_username => InvalidUsername,
    user_deactivated => UserDeactivated,
    user_locked => UserLocked,
    guest_access_forbidden => GuestAccessForbidden,
    unknown_token => UnknownToken,
    soft_logout => SoftLogout,
    bad_gateway => BadGateway,
    missing_token => MissingToken,
    weak_password => WeakPassword,
    bad_request => BadRequest,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Matrix { code, message: message.into() }
    }

    /// 429 `M_LIMIT_EXCEEDED`, telling the client how long to wait (`retry_after_ms`).
    pub fn limit_exceeded(message: impl Into<Cow<'static, str>>, retry_after: std::time::Duration) -> Self {
        Self::LimitExceeded { message: message.into(), retry_after }
    }

    /// How long the client should wait before trying again, when the error says.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::LimitExceeded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// [`Self::retry_after`] as an HTTP `Retry-After` value: whole seconds, rounded up, as the
    /// header allows no fraction.
    pub fn retry_after_header(&self) -> Option<String> {
        self.retry_after().map(|wait| wait.as_millis().div_ceil(1000).max(1).to_string())
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::Internal(message.to_string())
    }

    /// The code a client sees for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Matrix { code, .. } => *code,
            // A UIA continuation is a 401 whose body is the flow state, not an error code.
            Self::Uiaa(_) => ErrorCode::Forbidden,
            Self::WrongRoomKeysVersion(_) => ErrorCode::WrongRoomKeysVersion,
            Self::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            Self::IncompatibleRoomVersion(_) => ErrorCode::IncompatibleRoomVersion,
            Self::MaxDelayExceeded { .. } => ErrorCode::MaxDelayExceeded,
            Self::BadStatus { .. } => ErrorCode::BadStatus,
            Self::Storage(e) if e.is_key_too_long() => ErrorCode::TooLarge,
            Self::Storage(_) | Self::Internal(_) => ErrorCode::Unknown,
        }
    }

    /// The HTTP status and Matrix error kind to render, with the data some kinds carry.
    pub fn status_and_kind(&self) -> (u16, ErrorKind) {
        let (status, kind) = self.code().status_and_kind();
        let kind = match self {
            Self::WrongRoomKeysVersion(current) => ErrorKind::WrongRoomKeysVersion(
                ruma::api::error::WrongRoomKeysVersionErrorData::new(current.clone()),
            ),
            Self::IncompatibleRoomVersion(version) => ErrorKind::IncompatibleRoomVersion(
                ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
            ),
            Self::LimitExceeded { retry_after, .. } => {
                let mut data = ruma::api::error::LimitExceededErrorData::new();
                data.retry_after = Some(ruma::api::error::RetryAfter::Delay(*retry_after));
                ErrorKind::LimitExceeded(data)
            }
            Self::BadStatus { status, body } => {
                let mut data = ruma::api::error::BadStatusErrorData::new();
                data.status = http::StatusCode::from_u16(*status).ok();
                data.body = Some(body.clone());
                ErrorKind::BadStatus(data)
            }
            _ => kind,
        };
        (status, kind)
    }

    /// Fields the error body carries beyond ruma's error kinds: the unstable form of
    /// `M_MAX_DELAY_EXCEEDED` that clients read today (MSC4140's unstable prefix), with the
    /// stable name of the limit too.
    pub fn extra_fields(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match self {
            Self::MaxDelayExceeded { max_delay_ms } => {
                let mut extra = serde_json::Map::new();
                extra.insert("org.matrix.msc4140.errcode".to_owned(), "M_MAX_DELAY_EXCEEDED".into());
                extra.insert("org.matrix.msc4140.max_delay".to_owned(), (*max_delay_ms).into());
                extra.insert("max_delay".to_owned(), (*max_delay_ms).into());
                Some(extra)
            }
            Self::Matrix { code: ErrorCode::UserLocked, .. } => {
                Some(serde_json::Map::from_iter([("soft_logout".to_owned(), true.into())]))
            }
            _ => None,
        }
    }

    /// Whether this is the server's fault (logged at error level, details hidden).
    pub fn is_internal(&self) -> bool {
        match self {
            Self::Storage(e) => !e.is_key_too_long(),
            Self::Internal(_) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_details_behind_m_unknown() {
        let err = Error::internal("disk on fire");
        assert!(err.is_internal());
        assert_eq!(err.code().status_and_kind().0, 500);
    }

    #[test]
    fn incompatible_room_version_names_the_version() {
        let (status, kind) = Error::IncompatibleRoomVersion(ruma::RoomVersionId::V9).status_and_kind();
        assert_eq!(status, 400);
        let ErrorKind::IncompatibleRoomVersion(data) = kind else { panic!("{kind:?}") };
        assert_eq!(data.room_version, ruma::RoomVersionId::V9);
    }

    #[test]
    fn table_spot_checks() {
        assert_eq!(ErrorCode::MethodNotAllowed.status_and_kind(), (405, ErrorKind::Unrecognized));
        assert_eq!(ErrorCode::TooLarge.status_and_kind(), (413, ErrorKind::TooLarge));
        assert_eq!(ErrorCode::MissingToken.status_and_kind().0, 401);
        assert_eq!(Error::user_in_use("x").code(), ErrorCode::UserInUse);
        let (status, kind) = ErrorCode::SoftLogout.status_and_kind();
        assert_eq!(status, 401);
        assert!(matches!(kind, ErrorKind::UnknownToken(data) if data.soft_logout));
    }
}
