//! JWT login (`org.matrix.login.jwt`, as Synapse's `jwt_config`): an organisation that issues
//! its own tokens signs one for a user, and the token logs that user in.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ruma::OwnedUserId;

use crate::{Error, Homeserver, Result, config::JwtConfig, users::NewAccount};

/// The login type clients send and `GET /login` advertises.
pub const JWT_LOGIN_TYPE: &str = "org.matrix.login.jwt";

/// A checked `[jwt]` section: the key and the claims a token must carry.
pub struct JwtLogin {
    key: DecodingKey,
    validation: Validation,
    subject_claim: String,
    create_accounts: bool,
}

impl std::fmt::Debug for JwtLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtLogin").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// The DER inside a PEM block (`-----BEGIN PUBLIC KEY-----`).
fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem.lines().map(str::trim).filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the PEM key is not base64: {e}"))
}

/// An Ed25519 SubjectPublicKeyInfo is this 12-byte header and the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl JwtLogin {
    /// `Ok(None)` when JWT login is off; `Err` names what is wrong with the section.
    pub fn from_config(config: &JwtConfig) -> Result<Option<Self>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let secret = config.secret.as_deref().filter(|s| !s.is_empty()).ok_or("jwt.secret is required")?;
        let (algorithm, key) = match config.algorithm.as_str() {
            "HS256" => (Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes())),
            // aws-lc reads the SubjectPublicKeyInfo DER of an RSA key directly.
            "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_der(&pem_der(secret)?)),
            "EdDSA" => {
                let der = pem_der(secret)?;
                let raw = der
                    .strip_prefix(&ED25519_SPKI_PREFIX[..])
                    .filter(|k| k.len() == 32)
                    .ok_or("jwt.secret is not an Ed25519 public key in PEM")?;
                (Algorithm::EdDSA, DecodingKey::from_ed_der(raw))
            }
            other => return Err(format!("jwt.algorithm {other:?} is not one of HS256, RS256, EdDSA")),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        match &config.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".to_owned());
            }
            None => validation.iss = None,
        }
        if config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.audiences);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        Ok(Some(Self {
            key,
            validation,
            subject_claim: config.subject_claim.clone(),
            create_accounts: config.create_accounts,
        }))
    }

    /// The localpart or user ID a valid token names.
    fn subject(&self, token: &str) -> Result<String> {
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .map_err(|e| Error::forbidden(format!("JWT validation failed: {e}")))?
        .claims;
        claims
            .get(&self.subject_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(ToOwned::to_owned)
            .ok_or_else(|| Error::forbidden(format!("The JWT has no {} claim", self.subject_claim)))
    }
}

impl Homeserver {
    /// The user a JWT logs in, created first when that is allowed.
    pub async fn jwt_login_user(&self, token: &str) -> Result<OwnedUserId> {
        let jwt = self.jwt.as_ref().ok_or_else(|| Error::bad_request("JWT login is not enabled"))?;
        let subject = jwt.subject(token)?;
        if let Some(user_id) = self.users.resolve_login_user(&subject)? {
            return Ok(user_id);
        }
        if subject.starts_with('@') {
            let remote = ruma::UserId::parse(&subject).is_ok_and(|u| !self.users.is_local(&u));
            if remote {
                return Err(Error::forbidden("The JWT names a user of another server"));
            }
        }
        if !jwt.create_accounts {
            return Err(Error::forbidden("The JWT names a user that does not exist"));
        }
        let localpart = subject
            .strip_prefix('@')
            .and_then(|s| s.split_once(':'))
            .map_or(subject.as_str(), |(localpart, _)| localpart)
            .to_owned();
        let registered = self
            .users
            .register(NewAccount { localpart: Some(localpart), inhibit_login: true, ..Default::default() })
            .await?;
        Ok(registered.user_id)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;
    use crate::{ErrorCode, config::HomeserverConfig, util::now_ms};

    fn hs(jwt: JwtConfig) -> Homeserver {
        let mut config = HomeserverConfig::for_tests();
        config.jwt = jwt;
        Homeserver::for_tests(config)
    }

    fn hs256(claims: &serde_json::Value, secret: &str) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[tokio::test]
    async fn hs256_tokens_with_issuer_and_audience() {
        let hs = hs(JwtConfig {
            enabled: true,
            secret: Some("s3cret".into()),
            issuer: Some("https://issuer.example".into()),
            audiences: vec!["hearth".into()],
            ..Default::default()
        });
        let exp = now_ms() / 1000 + 600;
        let good = json!({"sub": "jay", "iss": "https://issuer.example", "aud": "hearth", "exp": exp});
        let user = hs.jwt_login_user(&hs256(&good, "s3cret")).await.unwrap();
        assert_eq!(user.as_str(), "@jay:localhost");
        // The second login finds the same account.
        assert_eq!(hs.jwt_login_user(&hs256(&good, "s3cret")).await.unwrap(), user);

        let bad = [
            hs256(&good, "wrong"),
            hs256(&json!({"sub": "jay", "iss": "https://other", "aud": "hearth", "exp": exp}), "s3cret"),
            hs256(
                &json!({"sub": "jay", "iss": "https://issuer.example", "aud": "other", "exp": exp}),
                "s3cret",
            ),
            hs256(
                &json!({"sub": "jay", "iss": "https://issuer.example", "aud": "hearth", "exp": 1000}),
                "s3cret",
            ),
            hs256(&json!({"sub": "jay", "iss": "https://issuer.example", "aud": "hearth"}), "s3cret"),
            hs256(&json!({"iss": "https://issuer.example", "aud": "hearth", "exp": exp}), "s3cret"),
            "not.a.jwt".to_owned(),
        ];
        for token in bad {
            let err = hs.jwt_login_user(&token).await.unwrap_err();
            assert!(matches!(err, Error::Matrix { code: ErrorCode::Forbidden, .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn account_creation_can_be_off() {
        let hs = hs(JwtConfig {
            enabled: true,
            secret: Some("k".into()),
            create_accounts: false,
            ..Default::default()
        });
        let token = hs256(&json!({"sub": "newbie", "exp": now_ms() / 1000 + 60}), "k");
        assert!(hs.jwt_login_user(&token).await.is_err());
        assert!(!hs.users.exists(ruma::user_id!("@newbie:localhost")).unwrap());
    }

    #[test]
    fn bad_sections_are_named() {
        let on = |algorithm: &str, secret: Option<&str>| JwtConfig {
            enabled: true,
            algorithm: algorithm.into(),
            secret: secret.map(Into::into),
            ..Default::default()
        };
        assert!(JwtLogin::from_config(&JwtConfig::default()).unwrap().is_none());
        assert!(JwtLogin::from_config(&on("HS256", None)).unwrap_err().contains("jwt.secret"));
        assert!(JwtLogin::from_config(&on("HS512", Some("x"))).unwrap_err().contains("jwt.algorithm"));
        assert!(
            JwtLogin::from_config(&on(
                "EdDSA",
                Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
            ))
            .is_err()
        );
    }
}
