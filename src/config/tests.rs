//! Configuration loading: defaults, file, environment, and the errors for bad input.
// figment::Jail closures return figment::Error, which is large; that is fine in tests.
#![allow(clippy::result_large_err)]

use std::io::Write;

use super::*;

fn write(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

/// Runs `f` while no other test changes the environment (figment's Jail holds a global lock).
fn isolated(f: impl FnOnce()) {
    figment::Jail::expect_with(|_| {
        f();
        Ok(())
    });
}

#[test]
fn defaults_without_a_file() {
    isolated(|| {
        let config = Config::load(None).unwrap();
        assert_eq!(config.server_name.as_str(), "localhost");
        assert_eq!(config.listen.client.to_string(), "127.0.0.1:8008");
        assert_eq!(config.storage.path, std::path::PathBuf::from("./data"));
        assert!(config.storage.sync_writes);
        assert_eq!(config.public_baseurl(), "http://127.0.0.1:8008/");
    });
}

#[test]
fn example_file_parses_and_documents_every_key() {
    isolated(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.server_name.as_str(), "localhost");
        assert_eq!(config.media, Config::default().media, "the example shows the media defaults");
        assert_eq!(config.passwords, Config::default().passwords, "the example shows the hashing defaults");
        assert_eq!(config.storage, Config::default().storage, "the example shows the storage defaults");
        // Every key the program knows appears in the example (commented or not).
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let mut missing = Vec::new();
        collect_keys(&defaults, "", &mut |key| {
            let leaf = key.rsplit('.').next().unwrap_or(key);
            if !text.contains(&format!("{leaf} =")) {
                missing.push(key.to_owned());
            }
        });
        for optional in [
            "public_baseurl",
            "token",
            "shared_secret",
            "turn_shared_secret",
            "turn_username",
            "turn_password",
            "url",
            "federation",
            "ca_file",
            "tls_cert",
            "tls_key",
            "providers",
            "secret",
            "issuer",
        ] {
            if !text.contains(&format!("{optional} =")) {
                missing.push(optional.to_owned());
            }
        }
        assert!(missing.is_empty(), "config.toml.example does not document: {missing:?}");
    });
}

fn collect_keys(value: &toml::Value, prefix: &str, f: &mut impl FnMut(&str)) {
    if let toml::Value::Table(table) = value {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            if v.is_table() {
                collect_keys(v, &key, f);
            } else {
                f(&key);
            }
        }
    }
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    isolated(|| {
        let file = write("[storage]\npathh = \"/tmp/x\"\n");
        let err = Config::load(Some(file.path())).unwrap_err().to_string();
        assert!(err.contains("pathh"), "{err}");

        let file = write("[listen]\nclient = \"not an address\"\n");
        let err = Config::load(Some(file.path())).unwrap_err().to_string();
        assert!(err.contains("listen.client") || err.contains("client"), "{err}");

        let file = write("server_name = \"bad name!\"\n");
        let err = Config::load(Some(file.path())).unwrap_err().to_string();
        assert!(err.contains("server_name"), "{err}");

        let err = Config::load(Some(std::path::Path::new("/nonexistent/hearth.toml"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    });
}

#[test]
fn environment_overrides_file() {
    // figment's Jail serializes tests that touch the process environment and restores it after.
    figment::Jail::expect_with(|jail| {
        jail.create_file("hearth.toml", "server_name = \"example.org\"\n[storage]\npath = \"/from/file\"\n")?;
        jail.set_env("HEARTH_STORAGE__PATH", "/from/env");
        jail.set_env("HEARTH_LISTEN__CLIENT", "127.0.0.1:9999");
        jail.set_env("HEARTH_REGISTRATION__ALLOW_GUESTS", "true");
        jail.set_env("HEARTH_CONFIG", "not-a-key");
        let config = Config::load(Some(std::path::Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(config.server_name.as_str(), "example.org");
        assert_eq!(config.storage.path, std::path::PathBuf::from("/from/env"));
        assert_eq!(config.listen.client.port(), 9999);
        assert!(config.registration.allow_guests);

        jail.set_env("HEARTH_STORAGE__SYNC_WRITES", "maybe");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.to_lowercase().contains("storage.sync_writes"), "{err}");
        Ok(())
    });
}

#[test]
fn invalid_combinations_are_refused() {
    isolated(|| {
        let file = write("public_baseurl = \"ftp://x\"\n");
        assert!(Config::load(Some(file.path())).is_err());
        let file = write("[registration]\ntoken = \"\"\n");
        assert!(Config::load(Some(file.path())).unwrap_err().to_string().contains("registration.token"));
        let file = write("[log]\nformat = \"xml\"\n");
        assert!(Config::load(Some(file.path())).is_err());
        // argon2 refuses less than 8 KiB per lane; the server must not start and fail every login.
        let file = write("[passwords]\nmemory_kib = 1\n");
        assert!(Config::load(Some(file.path())).unwrap_err().to_string().contains("passwords"));
    });
}

#[test]
fn sso_providers_and_jwt_parse_and_are_checked() {
    isolated(|| {
        let file = write(
            "[sso]\nclient_allowlist = [\"https://app.example/\"]\n\
             [[sso.providers]]\nid = \"github\"\nclient_id = \"a\"\nclient_secret = \"b\"\norganization = \"org\"\n\
             [[sso.providers]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"https://id.corp.example\"\n\
             client_id = \"c\"\nclient_secret = \"d\"\nscopes = [\"openid\"]\n\
             [jwt]\nenabled = true\nsecret = \"s\"\naudiences = [\"hearth\"]\n",
        );
        let config = Config::load(Some(file.path())).unwrap();
        assert_eq!(config.sso.providers.len(), 2);
        assert_eq!(config.sso.providers[1].kind, Some(hearth_core::config::ProviderKind::Oidc));
        assert!(config.jwt.enabled);

        // Every provider key is documented in the example.
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example"))
            .unwrap();
        let full = hearth_core::config::SsoProviderConfig {
            name: Some(String::new()),
            brand: Some(String::new()),
            icon: Some(String::new()),
            kind: Some(hearth_core::config::ProviderKind::Github),
            scopes: Some(Vec::new()),
            issuer: Some(String::new()),
            authorization_endpoint: Some(String::new()),
            token_endpoint: Some(String::new()),
            userinfo_endpoint: Some(String::new()),
            jwks_uri: Some(String::new()),
            localpart_template: Some(String::new()),
            display_name_template: Some(String::new()),
            hosted_domain: Some(String::new()),
            organization: Some(String::new()),
            ..Default::default()
        };
        let mut missing = Vec::new();
        collect_keys(&toml::Value::try_from(full).unwrap(), "", &mut |key| {
            if !text.contains(&format!("{key} =")) {
                missing.push(key.to_owned());
            }
        });
        assert!(missing.is_empty(), "config.toml.example does not document: {missing:?}");

        for (bad, named) in [
            ("[[sso.providers]]\nid = \"corp\"\nclient_id = \"a\"\n", "kind"),
            (
                "[[sso.providers]]\nid = \"github\"\nclient_id = \"a\"\n[[sso.providers]]\nid = \"github\"\nclient_id = \"b\"\n",
                "twice",
            ),
            ("[[sso.providers]]\nid = \"bad id\"\nkind = \"github\"\nclient_id = \"a\"\n", "bad id"),
            ("[[sso.providers]]\nid = \"github\"\nclient_idd = \"a\"\n", "client_idd"),
            ("[jwt]\nenabled = true\n", "jwt.secret"),
            ("[jwt]\nenabled = true\nsecret = \"s\"\nalgorithm = \"none\"\n", "jwt.algorithm"),
            (
                "[session]\nrefreshable_access_token_lifetime_secs = 0\n",
                "refreshable_access_token_lifetime_secs",
            ),
        ] {
            let err = Config::load(Some(write(bad).path())).unwrap_err().to_string();
            assert!(err.contains(named), "{named}: {err}");
        }
    });
}

#[test]
fn the_web_clients_own_sso_return_address_is_allowlisted_while_it_is_served() {
    let mut config =
        Config { public_baseurl: Some("https://matrix.example.org".to_owned()), ..Config::default() };
    config.sso.client_allowlist = vec!["https://app.example/".to_owned()];
    let allowlist = config.sso_with_web_client().client_allowlist;
    // Only the app's return address, not every path of the server.
    assert_eq!(allowlist, ["https://app.example/", "https://matrix.example.org/?via=sso"]);
    config.web_client.enabled = false;
    assert_eq!(config.sso_with_web_client().client_allowlist, ["https://app.example/"]);
}
