//! Which addresses URL previews may fetch from. A preview makes the server fetch a URL a user
//! chose, so without this anyone could make it read services on its own network.

use std::net::IpAddr;

use ipnet::IpNet;

/// Loopback, private, link-local, shared, documentation, multicast and reserved ranges.
pub const DEFAULT_IP_DENYLIST: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// The deny and allow lists, parsed.
#[derive(Debug, Clone, Default)]
pub struct IpPolicy {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl IpPolicy {
    /// Parses both lists; an error names the entry that is not a CIDR range or an address.
    pub fn new(deny: &[String], allow: &[String]) -> Result<Self, String> {
        let parse = |list: &[String]| -> Result<Vec<IpNet>, String> {
            list.iter()
                .map(|entry| {
                    entry
                        .parse::<IpNet>()
                        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("{entry:?} is not an IP range"))
                })
                .collect()
        };
        Ok(Self { deny: parse(deny)?, allow: parse(allow)? })
    }

    /// Whether a fetch may connect to `ip`. IPv4-mapped IPv6 addresses count as the IPv4
    /// address they carry, so `::ffff:127.0.0.1` is loopback.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|net| net.contains(&ip)) || !self.deny.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy(allow: &[&str]) -> IpPolicy {
        let deny: Vec<String> = DEFAULT_IP_DENYLIST.iter().map(|s| (*s).to_owned()).collect();
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        IpPolicy::new(&deny, &allow).unwrap()
    }

    #[test]
    fn private_and_loopback_addresses_are_denied_by_default() {
        let policy = default_policy(&[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "::ffff:127.0.0.1",
            "fd00::1",
            "0.0.0.0",
        ] {
            assert!(!policy.allows(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(policy.allows(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_allowlist_wins() {
        let policy = default_policy(&["127.0.0.1/32"]);
        assert!(policy.allows("127.0.0.1".parse().unwrap()));
        assert!(!policy.allows("127.0.0.2".parse().unwrap()));
        assert!(IpPolicy::new(&["nonsense".to_owned()], &[]).is_err());
        assert!(IpPolicy::new(&["10.0.0.1".to_owned()], &[]).is_ok());
    }
}
