//! Authentication beyond access tokens: user-interactive auth; later SSO and JWT login.

pub mod uiaa;
