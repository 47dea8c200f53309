//! The strict check of server names taken from input, before any lookup or connection.
//!
//! ruma's `ServerName` follows the spec's grammar loosely: it lets through `..` (a DNS name of
//! empty labels), port 0, and bare numbers such as `1`, which resolvers and URL parsers read
//! as the IPv4 shorthand `0.0.0.1`. The spec's hostname is a dotted-quad IPv4 address, a
//! bracketed IPv6 address or a DNS name; we hold DNS names to RFC 1123 labels (1 to 63
//! characters, 255 in all) and refuse a name whose last label is numeric unless the whole name is
//! a dotted quad, so nothing can be read as an IP address it does not spell out.

use std::net::{Ipv4Addr, Ipv6Addr};

use ruma::ServerName;

use crate::{Error, Result};

/// Refuses a server name outside the spec's grammar with 400 `M_INVALID_PARAM`.
pub fn check_server_name(name: &ServerName) -> Result<()> {
    if is_valid_server_name(name.as_str()) {
        Ok(())
    } else {
        Err(Error::invalid_param(format!("Invalid server name: {:?}", name.as_str())))
    }
}

/// Whether `name` is `hostname [ ":" port ]` per the spec, with the stricter DNS rules above.
pub fn is_valid_server_name(name: &str) -> bool {
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else { return false };
        if ip.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => return valid_port(port),
                None => return false,
            },
        }
    } else {
        match name.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (name, None),
        }
    };
    port.is_none_or(valid_port) && valid_host(host)
}

fn valid_port(port: &str) -> bool {
    (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

fn valid_host(host: &str) -> bool {
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Digits and dots only: an IPv4 address, spelled out in full or not at all.
        return host.split('.').count() == 4
            && host.split('.').all(|octet| (1..=3).contains(&octet.len()))
            && host.parse::<Ipv4Addr>().is_ok();
    }
    if host.is_empty() || host.len() > 255 {
        return false;
    }
    let labels_ok = host.split('.').all(|label| {
        (1..=63).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    // A numeric last label (`example.1`, `0x7f`) makes URL parsers try the name as an IPv4
    // address.
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric_last = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .or_else(|| last.strip_prefix("0X"))
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    labels_ok && !numeric_last
}

#[cfg(test)]
mod tests {
    use super::is_valid_server_name as valid;

    #[test]
    fn accepts_the_spec_examples() {
        for name in [
            "matrix.org",
            "matrix.org:8888",
            "1.2.3.4",
            "1.2.3.4:1234",
            "[1234:5678::abcd]",
            "[1234:5678::abcd]:5678",
            "localhost",
            "localhost:65535",
            "hs-1.example.com",
            "xn--bcher-kva.example",
        ] {
            assert!(valid(name), "{name} should be valid");
        }
    }

    #[test]
    fn refuses_what_ruma_lets_through() {
        for name in [
            "..",
            "a..b",
            ".example.org",
            "example.org.",
            "1",
            "127.1",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "example.123",
            "0x7f",
            "example.org:0",
            "example.org:+80",
            "example.org:65536",
            "example.org:",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "a_b.example",
            "",
            ":8448",
            &format!("{}.org", "a".repeat(64)),
        ] {
            assert!(!valid(name), "{name} should be refused");
        }
    }
}
