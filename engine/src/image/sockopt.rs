//! The socket options an image may hold beyond the named fields of `UnixSocket` and
//! `InetSocket`: each read at dump as `getsockopt` gives it, kept when it differs from a new
//! socket's of the same kind (or always, for [`Known::always`]) and when a new socket takes it
//! back (set and read again at dump), and set again at restore, then read back. The dump
//! refuses one it could not set again, by name; the restore sets no option this list lacks.
//!
//! Numbers are the kernel's (`asm-generic/socket.h`, `linux/in.h`, `linux/in6.h`,
//! `linux/tcp.h`), which x86_64 uses.

/// On which sockets an option is looked at.
pub const UNIX: u8 = 1;
/// TCP sockets (listeners).
pub const TCP: u8 = 2;
/// UDP sockets.
pub const UDP: u8 = 4;
/// Only on IPv6 sockets (with [`TCP`] or [`UDP`]).
pub const V6: u8 = 8;
const INET: u8 = TCP | UDP;
const ALL: u8 = UNIX | TCP | UDP;

/// One option the image may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub level: i32,
    pub name: i32,
    pub text: &'static str,
    /// [`UNIX`], [`TCP`], [`UDP`], [`V6`] combined.
    pub on: u8,
    /// The most bytes `getsockopt` gives of it.
    pub max: usize,
    /// Kept even at a new socket's value: the restore's own calls may change it (the buffer
    /// locks, which setting a buffer size takes).
    pub always: bool,
}

const SOL_SOCKET: i32 = 1;
const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const SOL_TCP: i32 = 6;
const SOL_UDP: i32 = 17;

const fn int(level: i32, name: i32, text: &'static str, on: u8) -> Known {
    Known {
        level,
        name,
        text,
        on,
        max: 4,
        always: false,
    }
}

const fn bytes(level: i32, name: i32, text: &'static str, on: u8, max: usize) -> Known {
    Known {
        level,
        name,
        text,
        on,
        max,
        always: false,
    }
}

/// `SO_BUF_LOCK`.
pub const SO_BUF_LOCK: i32 = 72;
/// `SO_PASSRIGHTS` (Linux 6.16): 1, the default, lets `SCM_RIGHTS` through.
pub const SO_PASSRIGHTS: i32 = 83;
/// `TCP_CONGESTION`.
pub const TCP_CONGESTION: i32 = 13;

/// Every option the image may hold. Not here: those the image's named fields hold (buffer
/// sizes, timeouts, `SO_REUSEADDR`, `SO_KEEPALIVE`, `TCP_NODELAY`, ...), those `getsockopt`
/// does not give as they were set (`IP_MTU`, `IPV6_MTU`, `TCP_TIMESTAMP`), and those it does
/// not give at all (`TCP_MD5SIG`, which the dump finds through `INET_DIAG` and refuses;
/// `TCP_AO_*`, `SO_ATTACH_REUSEPORT_*`, `IP_XFRM_POLICY`, `IPV6_PKTINFO`, `IPV6_NEXTHOP`,
/// `IPV6_FLOWLABEL_MGR`, not seen). `TCP_MAXSEG` set to 536 on a listener reads as unset
/// (536, the default of a socket never connected): not told apart.
///
/// In the order the restore sets them: `IP_TOS` first, since setting it sets the priority
/// from it, which a later `SO_PRIORITY` sets again as the process did.
pub const OPTIONS: &[Known] = &[
    int(SOL_IP, 1, "IP_TOS", INET),
    int(SOL_SOCKET, 1, "SO_DEBUG", ALL),
    int(SOL_SOCKET, 2, "SO_REUSEADDR", UNIX),
    int(SOL_SOCKET, 5, "SO_DONTROUTE", ALL),
    int(SOL_SOCKET, 6, "SO_BROADCAST", UNIX),
    int(SOL_SOCKET, 9, "SO_KEEPALIVE", UNIX),
    int(SOL_SOCKET, 10, "SO_OOBINLINE", ALL),
    int(SOL_SOCKET, 11, "SO_NO_CHECK", ALL),
    int(SOL_SOCKET, 12, "SO_PRIORITY", ALL),
    bytes(SOL_SOCKET, 13, "SO_LINGER", ALL, 8),
    int(SOL_SOCKET, 16, "SO_PASSCRED", INET),
    int(SOL_SOCKET, 18, "SO_RCVLOWAT", ALL),
    int(SOL_SOCKET, 29, "SO_TIMESTAMP", ALL),
    int(SOL_SOCKET, 34, "SO_PASSSEC", INET),
    int(SOL_SOCKET, 35, "SO_TIMESTAMPNS", ALL),
    int(SOL_SOCKET, 36, "SO_MARK", ALL),
    bytes(SOL_SOCKET, 37, "SO_TIMESTAMPING", ALL, 8),
    int(SOL_SOCKET, 40, "SO_RXQ_OVFL", ALL),
    int(SOL_SOCKET, 41, "SO_WIFI_STATUS", ALL),
    int(SOL_SOCKET, 42, "SO_PEEK_OFF", INET),
    int(SOL_SOCKET, 43, "SO_NOFCS", ALL),
    int(SOL_SOCKET, 45, "SO_SELECT_ERR_QUEUE", ALL),
    int(SOL_SOCKET, 46, "SO_BUSY_POLL", ALL),
    // A 64-bit rate: read as an int, one above 4 GiB/s would read as unlimited.
    bytes(SOL_SOCKET, 47, "SO_MAX_PACING_RATE", ALL, 8),
    int(SOL_SOCKET, 49, "SO_INCOMING_CPU", ALL),
    int(SOL_SOCKET, 60, "SO_ZEROCOPY", ALL),
    bytes(SOL_SOCKET, 61, "SO_TXTIME", ALL, 8),
    int(SOL_SOCKET, 62, "SO_BINDTOIFINDEX", UNIX),
    int(SOL_SOCKET, 63, "SO_TIMESTAMP_NEW", ALL),
    int(SOL_SOCKET, 64, "SO_TIMESTAMPNS_NEW", ALL),
    bytes(SOL_SOCKET, 65, "SO_TIMESTAMPING_NEW", ALL, 8),
    int(SOL_SOCKET, 69, "SO_PREFER_BUSY_POLL", ALL),
    int(SOL_SOCKET, 70, "SO_BUSY_POLL_BUDGET", ALL),
    Known {
        always: true,
        ..int(SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK", ALL)
    },
    int(SOL_SOCKET, 73, "SO_RESERVE_MEM", ALL),
    int(SOL_SOCKET, 74, "SO_TXREHASH", ALL),
    int(SOL_SOCKET, 75, "SO_RCVMARK", ALL),
    int(SOL_SOCKET, 82, "SO_RCVPRIORITY", ALL),
    int(SOL_SOCKET, SO_PASSRIGHTS, "SO_PASSRIGHTS", UNIX),
    bytes(SOL_IP, 4, "IP_OPTIONS", INET, 40),
    int(SOL_IP, 6, "IP_RECVOPTS", INET),
    int(SOL_IP, 7, "IP_RETOPTS", INET),
    int(SOL_IP, 8, "IP_PKTINFO", INET),
    int(SOL_IP, 10, "IP_MTU_DISCOVER", INET),
    int(SOL_IP, 11, "IP_RECVERR", INET),
    int(SOL_IP, 12, "IP_RECVTTL", INET),
    int(SOL_IP, 13, "IP_RECVTOS", INET),
    int(SOL_IP, 15, "IP_FREEBIND", INET),
    int(SOL_IP, 18, "IP_PASSSEC", INET),
    int(SOL_IP, 19, "IP_TRANSPARENT", INET),
    int(SOL_IP, 20, "IP_RECVORIGDSTADDR", INET),
    int(SOL_IP, 21, "IP_MINTTL", INET),
    int(SOL_IP, 23, "IP_CHECKSUM", INET),
    int(SOL_IP, 24, "IP_BIND_ADDRESS_NO_PORT", INET),
    int(SOL_IP, 25, "IP_RECVFRAGSIZE", INET),
    int(SOL_IP, 26, "IP_RECVERR_RFC4884", INET),
    bytes(SOL_IP, 32, "IP_MULTICAST_IF", INET, 4),
    int(SOL_IP, 33, "IP_MULTICAST_TTL", INET),
    int(SOL_IP, 34, "IP_MULTICAST_LOOP", INET),
    int(SOL_IP, 49, "IP_MULTICAST_ALL", INET),
    int(SOL_IP, 50, "IP_UNICAST_IF", INET),
    int(SOL_IP, 51, "IP_LOCAL_PORT_RANGE", INET),
    int(SOL_IPV6, 2, "IPV6_2292PKTINFO", INET | V6),
    int(SOL_IPV6, 3, "IPV6_2292HOPOPTS", INET | V6),
    int(SOL_IPV6, 4, "IPV6_2292DSTOPTS", INET | V6),
    int(SOL_IPV6, 5, "IPV6_2292RTHDR", INET | V6),
    int(SOL_IPV6, 8, "IPV6_2292HOPLIMIT", INET | V6),
    int(SOL_IPV6, 11, "IPV6_FLOWINFO", INET | V6),
    int(SOL_IPV6, 17, "IPV6_MULTICAST_IF", INET | V6),
    int(SOL_IPV6, 18, "IPV6_MULTICAST_HOPS", INET | V6),
    int(SOL_IPV6, 19, "IPV6_MULTICAST_LOOP", INET | V6),
    int(SOL_IPV6, 23, "IPV6_MTU_DISCOVER", INET | V6),
    int(SOL_IPV6, 25, "IPV6_RECVERR", INET | V6),
    int(SOL_IPV6, 29, "IPV6_MULTICAST_ALL", INET | V6),
    int(SOL_IPV6, 31, "IPV6_RECVERR_RFC4884", INET | V6),
    int(SOL_IPV6, 33, "IPV6_FLOWINFO_SEND", INET | V6),
    int(SOL_IPV6, 49, "IPV6_RECVPKTINFO", INET | V6),
    bytes(SOL_IPV6, 54, "IPV6_HOPOPTS", INET | V6, 2048),
    bytes(SOL_IPV6, 55, "IPV6_RTHDRDSTOPTS", INET | V6, 2048),
    bytes(SOL_IPV6, 57, "IPV6_RTHDR", INET | V6, 2048),
    bytes(SOL_IPV6, 59, "IPV6_DSTOPTS", INET | V6, 2048),
    int(SOL_IPV6, 51, "IPV6_RECVHOPLIMIT", INET | V6),
    int(SOL_IPV6, 53, "IPV6_RECVHOPOPTS", INET | V6),
    int(SOL_IPV6, 56, "IPV6_RECVRTHDR", INET | V6),
    int(SOL_IPV6, 58, "IPV6_RECVDSTOPTS", INET | V6),
    int(SOL_IPV6, 60, "IPV6_RECVPATHMTU", INET | V6),
    int(SOL_IPV6, 62, "IPV6_DONTFRAG", INET | V6),
    int(SOL_IPV6, 66, "IPV6_RECVTCLASS", INET | V6),
    int(SOL_IPV6, 67, "IPV6_TCLASS", INET | V6),
    int(SOL_IPV6, 70, "IPV6_AUTOFLOWLABEL", INET | V6),
    int(SOL_IPV6, 72, "IPV6_ADDR_PREFERENCES", INET | V6),
    int(SOL_IPV6, 73, "IPV6_MINHOPCOUNT", INET | V6),
    int(SOL_IPV6, 74, "IPV6_RECVORIGDSTADDR", INET | V6),
    int(SOL_IPV6, 75, "IPV6_TRANSPARENT", INET | V6),
    int(SOL_IPV6, 76, "IPV6_UNICAST_IF", INET | V6),
    int(SOL_IPV6, 77, "IPV6_RECVFRAGSIZE", INET | V6),
    int(SOL_IPV6, 78, "IPV6_FREEBIND", INET | V6),
    int(SOL_TCP, 2, "TCP_MAXSEG", TCP),
    int(SOL_TCP, 3, "TCP_CORK", TCP),
    int(SOL_TCP, 7, "TCP_SYNCNT", TCP),
    int(SOL_TCP, 8, "TCP_LINGER2", TCP),
    int(SOL_TCP, 9, "TCP_DEFER_ACCEPT", TCP),
    int(SOL_TCP, 10, "TCP_WINDOW_CLAMP", TCP),
    int(SOL_TCP, 12, "TCP_QUICKACK", TCP),
    bytes(SOL_TCP, TCP_CONGESTION, "TCP_CONGESTION", TCP, 16),
    int(SOL_TCP, 16, "TCP_THIN_LINEAR_TIMEOUTS", TCP),
    int(SOL_TCP, 18, "TCP_USER_TIMEOUT", TCP),
    int(SOL_TCP, 23, "TCP_FASTOPEN", TCP),
    int(SOL_TCP, 25, "TCP_NOTSENT_LOWAT", TCP),
    int(SOL_TCP, 27, "TCP_SAVE_SYN", TCP),
    int(SOL_TCP, 30, "TCP_FASTOPEN_CONNECT", TCP),
    bytes(SOL_TCP, 31, "TCP_ULP", TCP, 16),
    bytes(SOL_TCP, 33, "TCP_FASTOPEN_KEY", TCP, 32),
    int(SOL_TCP, 34, "TCP_FASTOPEN_NO_COOKIE", TCP),
    int(SOL_TCP, 36, "TCP_INQ", TCP),
    int(SOL_TCP, 37, "TCP_TX_DELAY", TCP),
    int(SOL_TCP, 44, "TCP_RTO_MAX_MS", TCP),
    int(SOL_TCP, 45, "TCP_RTO_MIN_US", TCP),
    int(SOL_TCP, 46, "TCP_DELACK_MAX_US", TCP),
    int(SOL_UDP, 1, "UDP_CORK", UDP),
    int(SOL_UDP, 100, "UDP_ENCAP", UDP),
    int(SOL_UDP, 101, "UDP_NO_CHECK6_TX", UDP),
    int(SOL_UDP, 102, "UDP_NO_CHECK6_RX", UDP),
    int(SOL_UDP, 103, "UDP_SEGMENT", UDP),
    int(SOL_UDP, 104, "UDP_GRO", UDP),
];

/// The options looked at on a socket of kind `kind` ([`UNIX`], [`TCP`] or [`UDP`]).
pub fn options_for(kind: u8, v6: bool) -> impl Iterator<Item = &'static Known> {
    OPTIONS
        .iter()
        .filter(move |k| k.on & kind != 0 && (k.on & V6 == 0 || v6))
}

/// The option `level`/`name` of the list, if the image may hold it.
pub fn known(level: i32, name: i32) -> Option<&'static Known> {
    OPTIONS.iter().find(|k| k.level == level && k.name == name)
}

/// An option's value in words: an integer, a name (`TCP_CONGESTION`), or bytes in hex.
pub fn value_text(v: &[u8]) -> String {
    if let Ok(b) = <[u8; 4]>::try_from(v) {
        return i32::from_ne_bytes(b).to_string();
    }
    let text = v.split(|b| *b == 0).next().unwrap_or_default();
    if !text.is_empty()
        && text.iter().all(|b| b.is_ascii_graphic())
        && v[text.len()..].iter().all(|b| *b == 0)
    {
        return format!("{:?}", String::from_utf8_lossy(text));
    }
    let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_option_is_listed_once_and_found_by_number() {
        for (i, k) in OPTIONS.iter().enumerate() {
            assert_eq!(known(k.level, k.name), Some(k), "{}", k.text);
            assert!(
                OPTIONS[i + 1..]
                    .iter()
                    .all(|o| (o.level, o.name) != (k.level, k.name)),
                "{} twice",
                k.text
            );
        }
        assert_eq!(known(SOL_SOCKET, 26), None, "SO_ATTACH_FILTER is never set");
        assert!(options_for(UNIX, false).any(|k| k.text == "SO_PASSRIGHTS"));
        assert!(!options_for(UDP, false).any(|k| k.text == "IPV6_TCLASS"));
        assert!(options_for(UDP, true).any(|k| k.text == "IPV6_TCLASS"));
        assert!(options_for(TCP, false).any(|k| k.text == "TCP_CONGESTION"));
    }

    #[test]
    fn values_in_words() {
        assert_eq!(value_text(&7i32.to_ne_bytes()), "7");
        assert_eq!(value_text(b"reno\0\0\0\0\0\0\0\0\0\0\0\0"), "\"reno\"");
        assert_eq!(value_text(&[1, 0, 0, 0, 5, 0, 0, 0]), "0x0100000005000000");
    }
}
